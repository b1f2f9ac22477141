"""The segment-wise rotary positions equal Qwen3-VL's own ``get_rope_index``: padded batches, several images of
different sizes, a part starting at an image, and the probe ``checked`` runs."""

import pytest
import torch

from ivt_core import rope
from ivt_core.supervision import cpu_rope_index

IMG = 12


@pytest.fixture(scope="module")
def model_rope():
    from transformers import AutoConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    from ivt_core.bootstrap import toy_model_path

    config = AutoConfig.from_pretrained(toy_model_path())
    return cpu_rope_index(Qwen3VLModel, config), config


def _row(*parts):
    ids = []
    for part in parts:
        ids += [IMG] * part if isinstance(part, int) else list(part)
    return ids


def test_positions_equal_the_models_on_a_padded_batch(model_rope):
    index, config = model_rope
    merge = config.vision_config.spatial_merge_size
    image = config.image_token_id
    assert image == IMG
    g1, g2, g3 = [1, 4, 6], [1, 8, 4], [1, 2, 2]
    rows = [_row([5, 6], 6, [7, 8, 9], 8, [3]), _row([4], 6, [1], 1, [5, 5]), _row([1, 2, 3, 4, 5])]
    grids = torch.tensor([g1, g2, g1, g3])
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    types = (ids == IMG).int()
    theirs = index(ids, mm_token_type_ids=types, image_grid_thw=grids, attention_mask=mask)[0]
    ours = rope.rope_index(IMG, merge)(ids, types, grids, mask)[0]
    assert torch.equal(ours * mask, theirs * mask)


def test_a_part_starting_at_an_image_and_the_check(model_rope):
    index, config = model_rope
    merge = config.vision_config.spatial_merge_size
    whole = _row([5, 6], 6, [7, 8], 8, [9, 9])
    grids = [torch.tensor([1, 4, 6]), torch.tensor([1, 8, 4])]
    full = rope.positions(whole, grids, IMG, merge)
    part = rope.positions(whole[10:], grids[1:], IMG, merge) + full[:, 10:].min()
    assert torch.equal(part, full[:, 10:])
    assert rope.checked(index, IMG, merge) is not index  # equal on the probe: the fast one is used
    shifted = lambda *a, **k: (index(*a, **k)[0] + 1, None)  # noqa: E731 - a model with another rule
    assert rope.checked(shifted, IMG, merge) is shifted
