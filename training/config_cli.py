"""What the trainers share at their front door: a typed config from flags, a config file or a job, and a ``main``.

The flags are generated from the config dataclass (``ivt_core.config.flags``): ``--config FILE`` (JSON or YAML)
supplies fields first, flags override it, unknown keys are refused. Started as a job (``--job-id N``), a trainer
reads the settings stored in job N's row. An empty ``base`` means the shipped toy model; an empty ``out`` means
WORKSPACE/models/<name>-<job id or time>.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ivt_core import logs
from ivt_core.config.flags import add_config_arguments
from ivt_core.config.flags import config_from_args as from_args
from ivt_core.errors import IVTError


def config_from_args(cls, name: str, description: str, argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog=f"python -m training.{name}", description=description)
    add_config_arguments(parser, cls)
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    args = parser.parse_args(argv)
    logs.setup(args.verbose)
    stored = None
    if args.job_id:  # a job: the settings stored with it; the runner gives the workspace and the job id
        from ivt_core.jobs import stored_config
        from ivt_core.workspace import Workspace

        stored = stored_config(Workspace.open(args.workspace or "workspace"), args.job_id)
    return with_default_out(from_args(cls, args, stored), name)


def with_default_out(cfg, name: str):
    """``cfg`` with its output folder filled in: WORKSPACE/models/<name>-job<N> for a job (what the job runner
    records), else WORKSPACE/models/<name>-<time>."""
    if not cfg.out:
        suffix = f"job{cfg.job_id}" if cfg.job_id else time.strftime("%Y%m%d-%H%M%S")
        cfg.out = str(Path(cfg.workspace) / "models" / f"{name}-{suffix}")
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
