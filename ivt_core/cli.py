"""The ``ivt`` command line.

    ivt tiny-model OUT --family qwen3_vl
    ivt data shapes --workspace W --split test --n 200 --seed 0
    ivt eval --workspace W --model PATH --dataset shapes --split test --steps 2 --stop fixed --json
    ivt runs --workspace W

Errors a user can fix are printed as one line (``ivt: error: ...``) with exit code 2; nothing half-written stays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ivt_core.errors import InvalidInputError, IVTError
from ivt_core.stopping import LABEL_FREE_POLICIES


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _positive(value: str) -> int:
    number = _non_negative(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _batch_size(value: str) -> int:
    return 0 if value == "auto" else _positive(value)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from ivt_core.tinykit import TinySpec, build_tiny_model

    out = build_tiny_model(args.out, args.family, TinySpec(seed=args.seed))
    print(f"wrote a tiny random {args.family} checkpoint to {out}", file=sys.stderr)
    return 0


def cmd_data_shapes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    with tqdm(total=args.n, desc=f"shapes {args.split}", unit="scene", file=sys.stderr) as bar:
        count = write_shapes_split(workspace, args.split, args.n, args.seed, args.name, progress=bar.update)
    print(f"wrote {count} {args.split} samples to dataset {args.name!r} in {workspace.root}", file=sys.stderr)
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from ivt_core.data.importers import import_dataset
    from ivt_core.workspace import Workspace

    sizes = None
    if args.sizes:
        try:
            sizes = [int(v) for v in args.sizes.split(",")]
        except ValueError:
            raise InvalidInputError(f"--sizes must be whole numbers like 2400,510,505, not {args.sizes!r}") from None
    summary = import_dataset(Workspace.open(args.workspace), args.format, args.path, args.split, args.images,
                             args.limit, args.name, sizes, args.seed)
    print(json.dumps(summary.to_dict()) if args.json else summary.text())
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from ivt_core.store.samples import list_datasets
    from ivt_core.workspace import Workspace

    db = Workspace.open(args.workspace).connect()
    for dataset in list_datasets(db):
        splits = ", ".join(f"{k}: {v}" for k, v in sorted(dataset["splits"].items())) or "empty"
        print(f"{dataset['name']} ({dataset['kind']}): {splits}")
    return 0


def _model_path(args: argparse.Namespace) -> Path:
    from ivt_core.bootstrap import toy_model_path

    return Path(args.model) if args.model else toy_model_path()


def _request_from_run(workspace, run_id: int):
    """The request, model and adapter a stored run was made with (to resume it)."""
    from ivt_core.evaluate import EvalRequest
    from ivt_core.grounders.base import Sampling
    from ivt_core.loop import LoopConfig
    from ivt_core.render import RenderStyle
    from ivt_core.store.runs import get_run

    db = workspace.connect()
    try:
        run = get_run(db, run_id)
    finally:
        db.close()
    cfg = run["config"]
    loop = LoopConfig(steps=cfg["steps"], policy=cfg["policy"], batch_size=cfg["batch_size"],
                      prompt_version=cfg["prompt_version"], render=RenderStyle.from_dict(cfg["render"]),
                      sampling=Sampling(**cfg["sampling"]), engine=cfg.get("engine", "auto"))
    request = EvalRequest(run["dataset"], run["split"], loop, cfg.get("limit"))
    return request, Path(cfg["model_path"]), (cfg.get("adapter_path") or None), cfg.get("coords")


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.bootstrap import DEFAULT_SPLITS, ensure_default_data
    from ivt_core.evaluate import EvalRequest, evaluate, load_eval_samples
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.jobs import JobReporter, job_arguments, submit
    from ivt_core.loop import LoopConfig
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    if args.job:
        job_id = submit(workspace, "eval", job_arguments(args.argv))
        print(f"started job {job_id}; follow it with `ivt jobs show {job_id}`", file=sys.stderr)
        print(json.dumps({"job_id": job_id}) if args.json else job_id)
        return 0
    if args.resume_run is not None:
        request, model_path, adapter, coords = _request_from_run(workspace, args.resume_run)
    else:
        if not args.dataset or not args.split:
            raise InvalidInputError("--dataset and --split are required (or --resume-run RUN_ID)")
        loop = LoopConfig(steps=args.steps, policy=args.stop, batch_size=args.batch_size,
                          sampling=Sampling(max_new_tokens=args.max_new_tokens), engine=args.engine).check()
        request = EvalRequest(args.dataset, args.split, loop, args.limit)
        model_path, adapter, coords = _model_path(args), args.adapter, args.coords
        if args.dataset == "shapes" and args.split in DEFAULT_SPLITS:
            written = ensure_default_data(workspace)
            if written:
                print(f"generated the default shapes-world splits first: {written}", file=sys.stderr)
    samples = load_eval_samples(workspace, request)
    shard = _shard(args.shard) if args.shard else None
    total = len(samples[shard[0]::shard[1]]) if shard else len(samples)
    with JobReporter(workspace, args.as_job_id) as reporter:
        with tqdm(total=total, desc=f"eval T={request.loop.steps}", unit="sample", file=sys.stderr) as bar:
            def advance(n: int) -> None:
                bar.update(n)
                reporter.progress(bar.n, total, f"{bar.n}/{total} samples")

            if args.gpus > 1 and not shard:
                from ivt_core.parallel_eval import evaluate_parallel

                result = evaluate_parallel(workspace, model_path, request, args.gpus, adapter, coords,
                                           "cpu" if args.device == "cpu" else "cuda", args.load_in_4bit, advance,
                                           args.as_job_id, args.resume_run)
                reporter.link_run(result.run_id)
                return _print_result(args, result)
            grounder = TransformersGrounder.load(model_path, adapter, args.load_in_4bit, args.device, coords)

            result = evaluate(workspace, grounder, model_path, request, adapter, samples, progress=advance,
                              resume_run=args.resume_run, job_id=args.as_job_id, shard=shard)
        reporter.link_run(result.run_id)
    return _print_result(args, result)


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InvalidInputError(f"--shard must look like I/N (worker I of N), got {text!r}") from None
    if not 0 <= index < count:
        raise InvalidInputError(f"--shard {text}: I must be between 0 and N-1")
    return index, count


def _print_result(args: argparse.Namespace, result) -> int:
    metrics = result.metrics
    if metrics["parse_failure_rate"] > 0:
        print(f"warning: {metrics['parse_failure_rate']:.0%} of answers had no readable box "
              "(counted as misses)", file=sys.stderr)
    if args.json:
        print(json.dumps({"run_id": result.run_id, **metrics}))
    else:
        print(_summary(result.run_id, metrics))
    return 0


def _summary(run_id: int, m: dict) -> str:
    lines = [f"run {run_id}: {m['n']} samples", f"{'':<28}{'Acc@0.5':>9}{'Acc@0.7':>9}{'Acc@0.9':>9}{'mIoU':>8}"]

    def row(label: str, d: dict) -> str:
        return f"{label:<28}{d['acc@0.5']:>9.3f}{d['acc@0.7']:>9.3f}{d['acc@0.9']:>9.3f}{d['miou']:>8.3f}"

    lines.append(row("step 0", m["step0"]))
    lines.append(row("final step", m["final"]))
    for name, d in m["policies"].items():
        lines.append(row(f"stop: {name}", d))
    lines.append(row(m["oracle"]["label"], m["oracle"]))
    outcomes = ", ".join(f"{k} {v:.0%}" for k, v in m["outcomes"].items())
    lines.append(f"degradation per step {m['degradation']:.3f}; {outcomes}; "
                 f"unparsable {m['parse_failure_rate']:.0%}")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from ivt_core.report import build_report, report_html, text_table
    from ivt_core.workspace import Workspace

    report = build_report(Workspace.open(args.workspace).connect(), args.run_id)
    if args.html:
        Path(args.html).write_text(report_html(report))
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    elif not args.html:
        run = report["run"]
        print(f"run {run['id']}: {report['model']['name']} on {run['dataset']}/{run['split']}, T={run['steps']}, "
              f"policy {run['policy']}, {report['metrics']['n']} samples, {run['status']}")
        print(text_table(report["metrics"]))
        for name, m in report["by_source"].items() if len(report["by_source"]) > 1 else ():
            print(f"\nsource {name} ({m['n']} samples)\n{text_table(m)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ivt_core.report import compare_runs, compare_text
    from ivt_core.workspace import Workspace

    result = compare_runs(Workspace.open(args.workspace).connect(), args.run_ids)
    print(json.dumps(result) if args.json else compare_text(result))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.data.sample import load_image
    from ivt_core.evaluate import check_images
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.probe import probe_samples, rows_as_dicts, summarize_probe
    from ivt_core.store.samples import get_sample, get_samples
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    db = workspace.connect()
    if args.sample:
        samples = [get_sample(db, args.sample)]
    elif args.dataset and args.split:
        samples = get_samples(db, args.dataset, args.split, args.n)
    else:
        raise InvalidInputError("give --sample ID, or --dataset and --split (with --n) for the batch form")
    check_images(workspace, samples)
    grounder = TransformersGrounder.load(_model_path(args), args.adapter, False, args.device, args.coords)
    rows = []
    for start in tqdm(range(0, len(samples), args.batch_size), desc="probe", unit="batch", file=sys.stderr):
        chunk = samples[start:start + args.batch_size]
        images = [load_image(workspace.resolve(s.image_path)) for s in chunk]
        rows += probe_samples(grounder, chunk, images, seed=args.seed)
    summary = summarize_probe(rows)
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows_as_dicts(rows)}))
        return 0
    print(f"{'drawn box':<14}{'n':>4}{'drawn IoU':>11}{'next IoU':>10}{'moved':>8}{'readable':>10}")
    for name, d in summary["per_counterfactual"].items():
        def fmt(v):
            return f"{v:.3f}" if v is not None else "-"

        print(f"{name:<14}{d['n']:>4}{fmt(d['mean_shown_iou']):>11}{fmt(d['mean_next_iou']):>10}"
              f"{fmt(d['mean_moved']):>8}{d['readable']:>10.0%}")
    corr = summary["corr_shown_iou_vs_moved"]
    print(f"correlation of drawn-box IoU with how much the model moved it: "
          f"{'n/a (too few readable refinements)' if corr is None else f'{corr:+.3f}'} "
          f"over {summary['pairs_used']} pairs")
    print(summary["reading"])
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``ivt train sft|grpo ...``: run a trainer here, or as a background job with --job.

    The trainers live in the ``training`` package (which imports ``ivt_core``, never the other way round); the
    command line is the front door to both, so it loads them by name.
    """
    import importlib

    from ivt_core.jobs import job_arguments, option_value, submit
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(option_value(args.rest, "--workspace"))
    rest = job_arguments(args.rest)
    if "--job" in args.rest:
        job_id = submit(workspace, args.trainer, rest)
        print(f"started {args.trainer} job {job_id}; follow it with `ivt jobs show {job_id}`", file=sys.stderr)
        print(job_id)
        return 0
    return importlib.import_module(f"training.{args.trainer}").main([*rest, "--workspace", str(workspace.root)])


def cmd_runs(args: argparse.Namespace) -> int:
    from ivt_core.store.runs import list_runs
    from ivt_core.workspace import Workspace

    db = Workspace.open(args.workspace).connect()
    for run in list_runs(db):
        m = run["metrics"] or {}
        score = (f"step0 Acc@0.5 {m['step0']['acc@0.5']:.3f}, final {m['final']['acc@0.5']:.3f}"
                 if m else run["status"])
        print(f"{run['id']:>4}  {run['dataset']}/{run['split']}  T={run['steps']} {run['policy']:<9} "
              f"n={run['n_samples']}  {score}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the command's --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from ivt_core.families import FAMILIES

    parser = _Parser(prog="ivt", description="IVT Studio: iterative visual thinking workbench.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("tiny-model", help="write a tiny random-weight VLM checkpoint (offline, for tests)")
    p.add_argument("out", help="folder to write the checkpoint to")
    p.add_argument("--family", required=True, choices=sorted(FAMILIES), help="model architecture")
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the random weights")
    p.set_defaults(func=cmd_tiny_model)

    data = sub.add_parser("data", help="create and list datasets").add_subparsers(
        dest="data_command", required=True, parser_class=_Parser)
    p = data.add_parser("shapes", help="generate a shapes-world split into a workspace")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $IVT_WORKSPACE or ./workspace)")
    p.add_argument("--split", required=True, choices=["train", "val", "test"])
    p.add_argument("--n", type=_non_negative, required=True, help="number of samples")
    p.add_argument("--seed", type=_non_negative, default=0, help="world seed (same seed, same scenes)")
    p.add_argument("--name", default="shapes", help="dataset name in the workspace")
    p.set_defaults(func=cmd_data_shapes)
    from ivt_core.data.importers import FORMATS

    p = data.add_parser("import", help="import a benchmark from local files (refcocog, ref-l4, ref-adv-s, jsonl, mix)")
    p.add_argument("format", choices=FORMATS)
    p.add_argument("path", help="file or folder of the source (for mix: comma-separated dataset names)")
    p.add_argument("--workspace", default=None)
    p.add_argument("--split", default=None, help="split to import (default: val; test for ref-adv-s and jsonl)")
    p.add_argument("--images", default=None, help="folder holding the images, where the format needs one")
    p.add_argument("--limit", type=_positive, default=None, help="import at most N samples")
    p.add_argument("--name", default=None, help="dataset name in the workspace (default: the format's name)")
    p.add_argument("--sizes", default=None, help="mix only: train,val,test sizes (default 2400,510,505)")
    p.add_argument("--seed", type=_non_negative, default=0, help="mix only: the draw's seed")
    p.add_argument("--json", action="store_true", help="print the import summary as JSON")
    p.set_defaults(func=cmd_data_import)
    p = data.add_parser("list", help="list the datasets of a workspace")
    p.add_argument("--workspace", default=None)
    p.set_defaults(func=cmd_data_list)

    p = sub.add_parser("eval", help="run the IVT loop on a dataset split and store the run")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $IVT_WORKSPACE or ./workspace)")
    p.add_argument("--model", default=None, help="local checkpoint folder (default: the shipped toy model)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder to put on the model")
    p.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="load the base model in 4-bit NF4")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--coords", default=None, help="box convention for models outside the known families")
    p.add_argument("--dataset", default=None, help="dataset name in the workspace")
    p.add_argument("--split", default=None, help="split to evaluate")
    p.add_argument("--steps", type=_non_negative, default=2, help="refinement steps T after step 0 (0: single shot)")
    p.add_argument("--stop", default="fixed", choices=list(LABEL_FREE_POLICIES), help="stopping policy")
    p.add_argument("--limit", type=_positive, default=None, help="evaluate only the first N samples")
    p.add_argument("--batch-size", type=_batch_size, default=8,
                   help="samples advancing together; auto: as many as the GPU's free memory holds")
    p.add_argument("--max-new-tokens", type=_positive, default=256, help="answer length limit per step")
    p.add_argument("--engine", choices=["auto", "cached", "plain"], default="auto",
                   help="cached: keep each conversation's KV cache between steps, continuous batching (Qwen3-VL); "
                        "plain: re-encode the whole conversation each step; auto: cached where supported")
    p.add_argument("--gpus", type=_positive, default=1,
                   help="spread the samples over N GPUs, one worker process each (with --device cpu: N CPU "
                        "processes); the merged run is stored as one")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")
    p.add_argument("--job", action="store_true", help="run in the background as a job and return at once")
    p.add_argument("--resume-run", type=_positive, default=None, help="continue an unfinished run")
    p.add_argument("--job-id", dest="as_job_id", type=_positive, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_eval, argv=None)

    jobs = sub.add_parser("jobs", help="background jobs: list, show, cancel, resume").add_subparsers(
        dest="jobs_command", required=True, parser_class=_Parser)
    for name, helptext in (("list", "list the jobs"), ("show", "one job in full"), ("cancel", "stop a job"),
                           ("resume", "continue an interrupted, cancelled or failed job")):
        p = jobs.add_parser(name, help=helptext)
        p.add_argument("--workspace", default=None)
        if name != "list":
            p.add_argument("job_id", type=_positive)
        p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("report", help="every number of a run: step 0, final, stopping rules, oracle")
    p.add_argument("run_id", type=_positive)
    p.add_argument("--workspace", default=None)
    p.add_argument("--html", default=None, help="write a self-contained HTML report with plots to this file")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="two or three runs side by side on their common samples")
    p.add_argument("run_ids", type=_positive, nargs="+", metavar="RUN_ID")
    p.add_argument("--workspace", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("probe", help="the mirage probe: counterfactual boxes and how the model refines each")
    p.add_argument("--workspace", default=None)
    p.add_argument("--model", default=None, help="local checkpoint folder (default: the shipped toy model)")
    p.add_argument("--adapter", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--coords", default=None)
    p.add_argument("--sample", default=None, help="probe this one sample id")
    p.add_argument("--dataset", default=None, help="batch form: probe the first --n samples of a split")
    p.add_argument("--split", default=None)
    p.add_argument("--n", type=_positive, default=50)
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the random counterfactual box")
    p.add_argument("--batch-size", type=_positive, default=4, help="samples per model call (6 prompts each)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)

    from ivt_core.cli_traces import add_parsers

    add_parsers(sub, _Parser, _positive, _non_negative)

    p = sub.add_parser("train", help="SFT or GRPO (options: `ivt train sft --help`); --job runs it in the background",
                       add_help=False)
    p.add_argument("trainer", choices=["sft", "grpo"])
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list the runs of a workspace")
    p.add_argument("--workspace", default=None)
    p.set_defaults(func=cmd_runs)
    return parser


def cmd_jobs(args: argparse.Namespace) -> int:
    from ivt_core.jobs import cancel, resume
    from ivt_core.store.jobs import get_job, list_jobs
    from ivt_core.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    if args.jobs_command == "list":
        db = workspace.connect()
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


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    if hasattr(args, "argv"):  # the arguments after the command word, for commands that can become jobs
        args.argv = (sys.argv[1:] if argv is None else argv)[1:]
    try:
        if getattr(args, "workspace", "absent") != "absent" and getattr(args, "as_job_id", None) is None:
            from ivt_core.jobs import reconcile
            from ivt_core.workspace import Workspace

            reconcile(Workspace.open(args.workspace))
        return args.func(args)
    except IVTError as exc:
        print(f"ivt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ivt: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
