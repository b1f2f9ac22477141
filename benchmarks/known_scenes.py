"""What the benchmarks on known scenes share (``attribute_probe.py``, ``naming_check.py``): their command-line
arguments, the split's scenes whose objects the shapes world recorded (``meta["objects"]``) with their images and
the model, and the JSON they write."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add_scene_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="at most this many scenes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=out)


def load_known_scenes(args: argparse.Namespace, script: str) -> tuple[list, list, object]:
    """(samples with known objects, their images, the model); exits saying what to fix when there are none."""
    from ivt_core.data.sample import load_image
    from ivt_core.errors import IVTError
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.store.samples import get_samples
    from ivt_core.workspace import Workspace

    try:
        workspace = Workspace.existing(args.workspace)
        with workspace.connect() as db:
            samples = [s for s in get_samples(db, args.dataset, args.split, limit=args.limit) if "objects" in s.meta]
        if not samples:
            sys.exit(f"{script}: no {args.dataset}/{args.split} samples with known objects in {args.workspace}")
        images = [load_image(workspace.resolve(s.image_path)) for s in samples]
        return samples, images, TransformersGrounder.load(args.model, device=args.device)
    except IVTError as exc:
        sys.exit(f"{script}: {exc}")


def write_result(result: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")
