"""What the trainers share at their front door: a typed config from a JSON file plus flags, and a ``main``.

Each config dataclass field becomes a ``--flag`` (bools are switches); ``--config FILE`` supplies a JSON object of
fields first, flags override it. Unknown keys in the file are refused. An empty ``base`` means the shipped toy
model; an empty ``out`` means WORKSPACE/models/<name>-<job id or time>.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from ivt_core.errors import InvalidInputError, IVTError

KINDS = {"int": int, "float": float, "str": str}


def config_from_args(cls, name: str, description: str, argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog=f"python -m training.{name}", description=description)
    parser.add_argument("--config", help=f"JSON file of {cls.__name__} fields")
    for f in fields(cls):
        flag = f"--{f.name.replace('_', '-')}"
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", default=None)
        else:
            parser.add_argument(flag, type=KINDS[f.type], default=None)
    args = parser.parse_args(argv)
    values = {}
    if args.config:
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read config {args.config}: {exc}") from exc
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidInputError(f"unknown config keys in {args.config}: {', '.join(sorted(unknown))}")
    values.update({f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name) is not None})
    cfg = cls(**values)
    if not cfg.base:
        from ivt_core.bootstrap import toy_model_path

        cfg.base = str(toy_model_path())
    if not cfg.out:
        cfg.out = str(Path(cfg.workspace) / "models" / f"{name}-{cfg.job_id or time.strftime('%Y%m%d-%H%M%S')}")
    return cfg


def run_main(name: str, train: Callable, make_config: Callable, argv: list[str] | None = None) -> int:
    """Run a trainer: exit 2 with one line for a user error, 130 when stopped (a checkpoint was saved)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        train(make_config(argv))
    except IVTError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: stopped; resume continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0
