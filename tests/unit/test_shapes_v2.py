"""The near-miss world (shapes-v2) and what it must not change (shapes-v1, the default, scene for scene)."""

import hashlib
import random

import numpy as np
import pytest

from ivt_core.boxes import Box, iou
from ivt_core.config.toy import ToyConfig, world_config
from ivt_core.data.shapes import (
    WORLDS,
    Shape,
    ShapesConfig,
    generate,
    make_sample,
    named_world,
    other_questions,
    visible_fractions,
)
from ivt_core.errors import InvalidInputError

V1_DIGEST = "796f468b521c3767949ce73816b11ae971a252bbf1696d20760a77294874c134"  # shapes-v1 test 0..29, before v2


def _shapes(sample):
    return [Shape(**{k: v for k, v in o.items() if k != "box"}) for o in sample.meta["objects"]]


def test_v1_scenes_are_unchanged():
    digest = hashlib.sha256()
    for s in generate(ShapesConfig(), 0, "test", 30):
        digest.update(s.image.tobytes())
        digest.update(s.expression.encode())
        digest.update(repr(s.bbox.to_xyxy()).encode())
        digest.update(repr(s.meta["objects"]).encode())
    assert digest.hexdigest() == V1_DIGEST


def test_v2_has_tiny_and_partly_hidden_targets_boxed_by_what_shows():
    world = named_world("shapes-v2")
    samples = list(generate(world, 0, "test", 150))
    hidden = 0
    for s in samples:
        shapes = _shapes(s)
        fractions = visible_fractions(shapes, world.image_size)
        assert min(fractions) >= world.min_visible
        target = s.meta["target"]
        if fractions[target] < 0.999:
            hidden += 1
            pixels = np.asarray(s.image).astype(int)
            x1, y1, x2, y2 = (round(v) for v in s.bbox.to_xyxy())
            assert s.bbox != shapes[target].box() and iou(s.bbox, shapes[target].box()) < 1.0
            assert 0 <= x1 < x2 <= pixels.shape[1] and 0 <= y1 < y2 <= pixels.shape[0]
    assert hidden >= 5
    assert sum(s.bbox.width < 20 for s in samples) >= 10  # tiny shapes (radius 6-9)


def test_v2_scenes_are_reproducible_and_differ_from_v1():
    a, b = make_sample(WORLDS["shapes-v2"], 0, "test", 4), make_sample(WORLDS["shapes-v2"], 0, "test", 4)
    assert a.image.tobytes() == b.image.tobytes() and a.bbox == b.bbox
    assert a.image.tobytes() != make_sample(ShapesConfig(), 0, "test", 4).image.tobytes()


def test_other_questions_name_other_objects_uniquely():
    for index in range(20):
        s = make_sample(ShapesConfig(), 0, "train", index)
        asked = other_questions(s, random.Random(index), 3)
        boxes = [Box(*o["box"]) for o in s.meta["objects"]]
        for text, box in asked:
            assert box in boxes and box != boxes[s.meta["target"]] and text != s.expression
        assert len({b for _, b in asked}) == len(asked)


def test_world_names_and_settings_are_checked():
    with pytest.raises(InvalidInputError, match="shapes-v1, shapes-v2"):
        named_world("shapes-v9")
    with pytest.raises(InvalidInputError, match="tiny_prob"):
        ShapesConfig(tiny_prob=1.5).check()
    with pytest.raises(InvalidInputError, match="unknown shapes-world settings colour"):
        world_config({"colour": 1})
    config = ToyConfig(world="shapes-v2").check()
    assert config.world["version"] == "shapes-v2" and config.world["tiny_prob"] == 0.25


def test_a_twin_keeps_its_colour_as_often_as_the_world_says():
    """twin_same_colour_prob: 1 makes every duplicated kind a copy in kind and colour, 0 draws its colour anew
    (the colour-contrast world a toy can be trained on); out of range is refused."""
    same = ShapesConfig(duplicate_prob=1.0, twin_same_colour_prob=1.0, version="t")
    assert all(len({(o["kind"], o["colour"]) for o in s.meta["objects"]}) == 1 for s in generate(same, 0, "train", 8))
    anew = ShapesConfig(duplicate_prob=1.0, twin_same_colour_prob=0.0, version="t")
    scenes = list(generate(anew, 0, "train", 8))
    assert all(len({o["kind"] for o in s.meta["objects"]}) == 1 for s in scenes)
    assert sum(len({o["colour"] for o in s.meta["objects"]}) > 1 for s in scenes) >= 6
    assert world_config({"twin_same_colour_prob": 0.0}).twin_same_colour_prob == 0.0
    with pytest.raises(InvalidInputError, match="twin_same_colour_prob"):
        ShapesConfig(twin_same_colour_prob=1.2).check()
