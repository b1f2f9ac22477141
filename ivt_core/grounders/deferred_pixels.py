"""Images whose pixel rows the cached engine computes only when a prefill chunk needs them (``CachedEngine._pixels``):
on a GPU a chunk's images are read while the previous chunk's prefill runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class PendingPixels:
    """Images whose pixel rows are computed only when a prefill chunk needs them (``CachedEngine._pixels``): the
    pending images of a chunk's rows in one call, each once."""

    def __init__(self, compute, images: list):
        self.compute, self.images, self.rows = compute, images, {}

    def fill(self, indices: list[int]) -> None:
        missing = sorted({index for index in indices if index not in self.rows})
        if missing:
            rows, _ = self.compute([self.images[index] for index in missing])
            self.rows.update(zip(missing, rows, strict=True))


@dataclass(frozen=True)
class PendingRow:
    """One image of a ``PendingPixels``: its pixel rows once its chunk has computed them."""

    pending: PendingPixels
    index: int


def resolved(entries: list) -> list[torch.Tensor]:
    """The pixel rows of ``entries`` (tensors, or ``PendingRow`` of pending images: computed now, one call per
    group)."""
    wanted: dict[int, tuple[PendingPixels, list[int]]] = {}
    for entry in entries:
        if isinstance(entry, PendingRow):
            wanted.setdefault(id(entry.pending), (entry.pending, []))[1].append(entry.index)
    for pending, indices in wanted.values():
        pending.fill(indices)
    return [entry.pending.rows[entry.index] if isinstance(entry, PendingRow) else entry for entry in entries]
