"""A fingerprint of a model's weights, so that the registry tells apart two checkpoints found at one path.

The registry finds a model by its folder (and adapter folders). When the weights in that folder change (a
checkpoint retrained into the same ``--out``, a shipped toy replaced by a newer one on ``git pull``), the runs
made with the old weights must not be counted as runs of the new ones. A full SHA-256 of every weight file would
read gigabytes on each evaluation of a real checkpoint, so the fingerprint reads a fixed amount per file: its
size, its first and last 64 KiB (a safetensors header names every tensor, its dtype and offsets) and 14 blocks
evenly spaced between, together with the small JSON configs in full. Training changes every weight, so any
retrained or replaced checkpoint changes these blocks; a change confined to a few bytes between the sampled
blocks would go unnoticed, which is the price of the constant cost. ``huggingface_hub`` and git-lfs hash whole
files because they store them once; here the same folder is fingerprinted at every run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz")
CONFIG_NAMES = ("config.json", "adapter_config.json", "generation_config.json")
BLOCK = 64 * 1024
MIDDLE_BLOCKS = 14


def _files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.name.endswith(WEIGHT_SUFFIXES) or p.name in CONFIG_NAMES))


def _file_digest(path: Path, digest) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        if path.name in CONFIG_NAMES or size <= BLOCK * (MIDDLE_BLOCKS + 2):
            digest.update(f.read())
            return
        offsets = [0] + [size * (i + 1) // (MIDDLE_BLOCKS + 1) for i in range(MIDDLE_BLOCKS)] + [size - BLOCK]
        for offset in offsets:
            f.seek(offset)
            digest.update(f.read(BLOCK))


def weight_files(base_path: str, adapter_path: str = "") -> list[Path]:
    """The files the fingerprint reads: weights and configs of the base folder and of each adapter folder."""
    folders = [base_path] + [p for p in adapter_path.split(",") if p]
    return [f for folder in folders for f in _files(Path(folder))]


def weights_fingerprint(base_path: str, adapter_path: str = "") -> str:
    """16 hex digits naming the weights at ``base_path`` (+ ``adapter_path``, comma-separated folders); "" for a
    server's URL or a path with no weight files (nothing to tell apart)."""
    files = weight_files(base_path, adapter_path)
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in files):
        return ""
    digest = hashlib.sha256()
    for path in files:
        _file_digest(path, digest)
    return digest.hexdigest()[:16]


def newest_change(base_path: str, adapter_path: str = "") -> float:
    """The newest modification time (seconds since the epoch) among the fingerprinted files; 0 if none."""
    return max((f.stat().st_mtime for f in weight_files(base_path, adapter_path)), default=0.0)
