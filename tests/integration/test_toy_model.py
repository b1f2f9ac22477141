"""The shipped toy model loads offline from assets/ and answers a known test scene as recorded."""

import pytest

from ivt_core.boxes import Box, iou


@pytest.fixture(scope="module")
def toy():
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    return TransformersGrounder.load(toy_model_path(), device="cpu")


def _predict(toy, indices):
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.loop import LoopConfig, run_batch

    raw = [make_sample(ShapesConfig(), 0, "test", i) for i in indices]
    samples = [Sample(s.id, "shapes", "test", "", 224, 224, s.expression, s.bbox) for s in raw]
    return raw, run_batch(toy, samples, LoopConfig(steps=0), [s.image for s in raw])


def test_known_prediction(toy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw, (traj,) = _predict(toy, [0])
    assert raw[0].expression == "the second star from the bottom"
    step = traj.steps[0]
    assert step.parse_ok and step.raw_text.startswith('{"bbox_2d": [')
    recorded = Box(692 * 0.224, 19 * 0.224, 957 * 0.224, 282 * 0.224)  # answer recorded on 2026-11-21
    assert iou(step.box, recorded) > 0.95 and step.iou > 0.9


def test_small_batch_is_mostly_right_and_always_well_formed(toy):
    _, trajs = _predict(toy, range(16))
    assert all(t.steps[0].parse_ok for t in trajs)
    assert sum(t.steps[0].iou >= 0.5 for t in trajs) >= 9


def test_cli_probe_batch_form_on_toy_model(shapes_ws, capsys):
    import json

    from ivt_core.cli import main

    assert main(["probe", "--workspace", str(shapes_ws.root), "--dataset", "shapes", "--split", "test",
                 "--n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["samples"] == 2 and len(out["rows"]) == 16  # 8 second turns each
    # (a look-alike in both scenes, the re-ask included)
    assert main(["probe", "--workspace", str(shapes_ws.root)]) == 2
