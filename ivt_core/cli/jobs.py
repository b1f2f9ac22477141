"""``ivt jobs ...`` and ``ivt train sft|grpo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    """``ivt train sft|grpo ...``: run a trainer here, or as a background job with --job.

    The trainers live in the ``training`` package (which imports ``ivt_core``, never the other way round); the
    command line is the front door to both, so it loads them by name.
    """
    import importlib

    from ivt_core.config.flags import config_from_args
    from ivt_core.jobs import submit
    from ivt_core.workspace import Workspace

    config = config_from_args(args.config_class, args)
    if args.job:
        workspace = Workspace.open(config.workspace)
        job_id = submit(workspace, args.trainer, config)
        print(f"started {args.trainer} job {job_id}; follow it with `ivt jobs show {job_id}`", file=sys.stderr)
        print(job_id)
        return 0
    from training.config_cli import run_main, with_default_out

    trainer = importlib.import_module(f"training.{args.trainer}")
    return run_main(args.trainer, trainer.train, lambda _argv: with_default_out(config, args.trainer))


def cmd_jobs(args: argparse.Namespace) -> int:
    from ivt_core.jobs import cancel, resume
    from ivt_core.store.jobs import get_job, list_jobs
    from ivt_core.workspace import Workspace

    workspace = Workspace.existing(args.workspace)
    if args.jobs_command == "list":
        db = workspace.connect()
        if not list_jobs(db, limit=1):
            print("no jobs in this workspace yet (`ivt eval --job ...` or the app's Train tab start one)")
        for job in list_jobs(db):
            done = f"{job['progress_done']}/{job['progress_total']}" if job["progress_total"] else ""
            print(f"{job['id']:>4}  {job['kind']:<6} {job['status']:<12} {done:<10} {job['created_at']}  "
                  f"{' '.join(job['argv'])}")
        return 0
    if args.jobs_command == "show":
        job = get_job(workspace.connect(), args.job_id)
        print(json.dumps(job, indent=1))
        log = Path(job["log_path"])
        if log.is_file():
            tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-10:]
            print("\n".join(["--- log tail ---", *tail]))
        return 0
    if args.jobs_command == "cancel":
        print(f"job {args.job_id}: {cancel(workspace, args.job_id)}")
        return 0
    new_id = resume(workspace, args.job_id)
    print(f"job {args.job_id} resumed as job {new_id}")
    return 0


