"""``ivt synth`` and ``ivt traces ...``: corrective trace synthesis, review and export from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys


def run_of_job(workspace, job_id: int) -> int:
    """The run an evaluation job wrote. Raises NotFoundError when it wrote none."""
    from ivt_core.errors import NotFoundError
    from ivt_core.store.runs import run_of_job as stored_run

    db = workspace.connect()
    try:
        run_id = stored_run(db, job_id)
    finally:
        db.close()
    if run_id is None:
        raise NotFoundError(f"job {job_id} wrote no run; `ivt jobs show {job_id}` says what it did")
    return run_id


def cmd_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.config.flags import config_from_args
    from ivt_core.config.synthesis import SynthConfig
    from ivt_core.jobs import JobReporter, stored_config, submit
    from ivt_core.traces import synthesize
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    base = stored_config(workspace, args.as_job_id) if args.as_job_id else None
    config = config_from_args(SynthConfig, args, base)
    if args.job:
        job_id = submit(workspace, "synth", config)
        print(f"started job {job_id}; follow it with `ivt jobs show {job_id}`", file=sys.stderr)
        print(job_id)
        return 0
    config.teacher_api_key = config.teacher_api_key or os.environ.get("IVT_TEACHER_API_KEY", "")
    config.preflight(workspace)
    run = config.run if config.run is not None else run_of_job(workspace, config.run_of_job)
    teacher = make_teacher(config)
    with JobReporter(workspace, args.as_job_id) as reporter, tqdm(desc="synth", unit="trace", file=sys.stderr) as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
            reporter.progress(done, total, f"{done}/{total} traces")

        counts = synthesize(workspace, run, teacher, config, progress=advance)
    print(json.dumps(counts) if args.json else
          f"run {run}, teacher {teacher.name}: {counts['created']} new pending traces "
          f"({counts['corrective']} corrective eligible, {counts['keep']} keep, "
          f"{counts['counterfactual']} counterfactual, {counts['existing']} already there)")
    return 0


def make_teacher(config):
    """The teacher a ``SynthConfig`` names."""
    from ivt_core.teachers.geometric import GeometricTeacher

    if config.teacher == "geometric":
        return GeometricTeacher(seed=config.seed, style=config.style)
    from ivt_core.teachers.vlm import VLMTeacher

    if config.teacher_url:
        from ivt_core.grounders.openai_grounder import OpenAIGrounder

        grounder = OpenAIGrounder(config.teacher_url, config.teacher_model or "default", config.teacher_family,
                                  api_key=config.teacher_api_key or None)
    else:
        from ivt_core.grounders.transformers_grounder import TransformersGrounder

        grounder = TransformersGrounder.load(config.teacher_model, device=config.device)
    return VLMTeacher(grounder)


def cmd_traces(args: argparse.Namespace) -> int:
    from ivt_core import traces as core
    from ivt_core.store.traces import count_traces, get_trace, list_traces, revisions
    from ivt_core.trace_export import export_traces, import_traces
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    db = workspace.connect()
    filters = {k: getattr(args, k, None) for k in ("dataset", "teacher", "iou_min", "iou_max", "search", "kind")}
    command = args.traces_command
    if command == "list":
        counts = count_traces(db, **filters)
        print("  ".join(f"{k}: {v}" for k, v in counts.items()))
        for t in list_traces(db, limit=args.limit, status=args.status, **filters):
            print(f"{t['id']:>5} v{t['version']:<3} {t['status']:<9} {t['kind']:<10} {t['teacher']:<10} "
                  f"IoU {t['student_iou']:.2f} -> {t['final_iou']:.2f}  {t['sample_id']}"
                  + (f"  flags: {','.join(t['flags'])}" if t["flags"] else ""))
        return 0
    if command == "show":
        trace = get_trace(db, args.trace_id)
        print(json.dumps({**trace, "revisions": revisions(db, args.trace_id)}, indent=1))
        return 0
    if command in ("approve", "reject"):
        if args.all_matching:
            ids = [t["id"] for t in list_traces(db, limit=1_000_000, status="pending", **filters)]
            result = core.bulk(db, ids, command, args.reviewer)
            left = len(result["conflicts"])
            conflicts = f"; {left} changed meanwhile and were left alone" if left else ""
            print(f"{command}d {result['done']} of {len(ids)} pending traces matching the filters{conflicts} "
                  f"(each is a new revision: `ivt traces show ID` lists them)")
            return 0
        if not args.trace_id:
            from ivt_core.errors import InvalidInputError

            raise InvalidInputError("give trace ids, or --all-matching with filters for a bulk action")
        for trace_id in args.trace_id:
            version = args.version if args.version is not None else get_trace(db, trace_id)["version"]
            new = (core.approve if command == "approve" else core.reject)(db, trace_id, version, args.reviewer)
            print(f"trace {trace_id}: {command}d (version {new})")
        return 0
    if command == "export":
        n = export_traces(workspace, args.out, args.status, args.images, args.style, **filters)
        print(f"wrote {n} traces to {args.out}", file=sys.stderr)
        return 0
    counts = import_traces(workspace, args.file, args.reviewer)
    print(json.dumps(counts))
    return 0


def add_parsers(sub, parser_class, positive) -> None:
    from ivt_core.config.flags import add_config_arguments
    from ivt_core.config.synthesis import SynthConfig

    p = sub.add_parser("synth", help="write corrective traces from a run's own errors")
    p.add_argument("--workspace", default=None)
    add_config_arguments(p, SynthConfig)
    p.add_argument("--json", action="store_true")
    p.add_argument("--job", action="store_true", help="run in the background as a job")
    p.add_argument("--job-id", dest="as_job_id", type=positive, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_synth)

    traces = sub.add_parser("traces", help="review and export corrective traces").add_subparsers(
        dest="traces_command", required=True, parser_class=parser_class)

    def filtered(name: str, helptext: str):
        q = traces.add_parser(name, help=helptext)
        q.add_argument("--workspace", default=None)
        q.add_argument("--dataset", default=None)
        q.add_argument("--teacher", default=None)
        q.add_argument("--kind", choices=["corrective", "keep"], default=None)
        q.add_argument("--iou-min", type=float, default=None, help="student step-0 IoU at least")
        q.add_argument("--iou-max", type=float, default=None, help="student step-0 IoU at most")
        q.add_argument("--search", default=None, help="full-text search in expressions and reasoning")
        q.set_defaults(func=cmd_traces)
        return q

    q = filtered("list", "traces with counts per status")
    q.add_argument("--status", choices=["pending", "approved", "rejected"], default=None)
    q.add_argument("--limit", type=positive, default=50)
    q = traces.add_parser("show", help="one trace with its revision history")
    q.add_argument("trace_id", type=positive)
    q.add_argument("--workspace", default=None)
    q.set_defaults(func=cmd_traces)
    for name in ("approve", "reject"):
        q = filtered(name, f"{name} traces (ids, or --all-matching pending traces of the filters)")
        q.add_argument("trace_id", type=positive, nargs="*")
        q.add_argument("--version", type=positive, default=None, help="the version you reviewed (conflict check)")
        q.add_argument("--all-matching", action="store_true")
        q.add_argument("--reviewer", default="cli")
    q = filtered("export", "write traces as chat JSONL for SFT (TRL or LLaMA-Factory)")
    q.add_argument("--out", required=True)
    q.add_argument("--status", choices=["pending", "approved", "rejected"], default="approved")
    q.add_argument("--images", default=None, help="copy the images into this folder (paths relative to --out)")
    q.add_argument("--style", choices=["trl", "llamafactory"], default="trl")
    q = traces.add_parser("import", help="read an exported JSONL back into the workspace")
    q.add_argument("file")
    q.add_argument("--workspace", default=None)
    q.add_argument("--reviewer", default="import")
    q.set_defaults(func=cmd_traces)
