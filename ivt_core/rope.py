"""Qwen3-VL's 3-D rotary positions of a token sequence, computed segment by segment.

Why not only the model's ``get_rope_index``: it walks every token of every row in Python (``itertools.groupby``
over the row's type ids) and builds each image's grid afresh, ~0.9 ms per row on the H200 machine's CPU; the
cached engine asks for the new part of every conversation at every step and GRPO for every rollout, which made it
the largest CPU cost of a toy GRPO step (~0.3 s of ~3 s, docs/LOG.md). Here a row is cut into its few runs of
text and image tokens (numpy), text runs count up by one, and an image of an (h, w) grid takes positions
(start, start + row, start + column) after the merge and moves the next start by max(h, w): the model's own
rule for images (videos are not handled). ``checked`` compares this with the model's own function on a probe
sequence and hands back the model's when they differ, so a model whose rule is another is never given wrong
positions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


def positions(ids, grids, image_token_id: int, merge: int) -> torch.Tensor:
    """[3, len(ids)] positions of one sequence starting at 0 (a part that starts at a text token or at an image's
    first token: add the position it starts at). ``grids``: (t, h, w) per image, in order (an iterator is consumed
    as far as this sequence's images go)."""
    ids = np.asarray(ids)
    out = np.empty((3, len(ids)), dtype=np.int64)
    is_image = ids == image_token_id
    edges = np.flatnonzero(np.diff(is_image.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(ids)]
    start, images = 0, iter(grids)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if not is_image[a]:
            out[:, a:b] = np.arange(start, start + b - a)
            start += b - a
            continue
        while a < b:  # a run of image tokens: one image after another
            _, h, w = (int(v) for v in next(images))
            h, w = h // merge, w // merge
            block = _image_block(h, w)[:, : b - a]
            out[:, a:a + block.shape[1]] = block + start
            a += block.shape[1]
            start += max(h, w)
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=64)
def _image_block(h: int, w: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = np.stack([np.zeros(h * w, dtype=np.int64), rows.reshape(-1), cols.reshape(-1)])
    block.setflags(write=False)
    return block


def rope_index(image_token_id: int, merge: int):
    """A stand-in for ``get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, attention_mask)`` over a
    right- or left-padded batch (the form ``supervision.collate`` calls); padding gets position 1, as there."""

    def index(input_ids, mm_token_type_ids=None, image_grid_thw=None, attention_mask=None, **_):
        rows, length = input_ids.shape
        out = torch.ones(3, rows, length, dtype=torch.long)
        grids = iter(image_grid_thw if image_grid_thw is not None else [])
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        for row in range(rows):
            out[:, row, mask[row]] = positions(input_ids[row][mask[row]].numpy(), grids, image_token_id, merge)
        return out, None

    return index


def checked(model_rope, image_token_id: int, merge: int, grid: tuple[int, int, int] = (1, 4, 6)):
    """``rope_index(...)`` if it gives ``model_rope``'s positions on a probe (text, an image, text, an image,
    text), else ``model_rope`` itself."""
    t, h, w = grid
    count = t * h * w // merge**2
    ids = torch.tensor([[5, 6, *[image_token_id] * count, 7, 8, 9, *[image_token_id] * count, 5]])
    grids = torch.tensor([grid, grid])
    types = (ids == image_token_id).int()
    fast = rope_index(image_token_id, merge)
    try:
        theirs = model_rope(ids, mm_token_type_ids=types, image_grid_thw=grids, attention_mask=torch.ones_like(ids))[0]
    except Exception:  # noqa: BLE001 - a model whose rope index needs more: use it as it is
        return model_rope
    return fast if torch.equal(fast(ids, types, grids, torch.ones_like(ids))[0], theirs) else model_rope
