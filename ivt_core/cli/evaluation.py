"""``ivt eval``, ``ivt report``, ``ivt compare``, ``ivt paper-table``, ``ivt probe``, ``ivt runs``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ivt_core.errors import InvalidInputError


def _model_path(args: argparse.Namespace) -> Path:
    from ivt_core.bootstrap import toy_model_path

    return Path(args.model) if args.model else toy_model_path()


def _request_from_run(workspace, run_id: int):
    """The request, model and adapter a stored run was made with (to resume it)."""
    from ivt_core.evaluate import EvalRequest, is_endpoint, refuse_changed_weights
    from ivt_core.grounders.base import Sampling
    from ivt_core.loop import LoopConfig
    from ivt_core.render import RenderStyle
    from ivt_core.store.runs import get_run

    db = workspace.connect()
    try:
        run = get_run(db, run_id)
        refuse_changed_weights(db, run)  # before loading a model the run cannot use
    finally:
        db.close()
    cfg = run["config"]
    loop = LoopConfig(steps=cfg["steps"], policy=cfg["policy"], batch_size=cfg["batch_size"],
                      prompt_version=cfg["prompt_version"], render=RenderStyle.from_dict(cfg["render"]),
                      sampling=Sampling(**cfg["sampling"]), engine=cfg.get("engine", "auto"),
                      verdict=cfg.get("verdict", "own"))
    request = EvalRequest(run["dataset"], run["split"], loop, cfg.get("limit"))
    model = cfg["model_path"] if is_endpoint(cfg["model_path"]) else Path(cfg["model_path"])
    return request, model, (cfg.get("adapter_path") or None), cfg.get("coords")


def _grounder(workspace, config, model_path, adapter, coords):
    """The model to evaluate: a local checkpoint, or a server (``--endpoint``, or the run being resumed was
    made against one: its stored model name and family are asked for again)."""
    import os

    from ivt_core.evaluate import is_endpoint
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    if not is_endpoint(model_path):
        return TransformersGrounder.load(model_path, adapter, config.load_in_4bit, config.device, coords)
    from ivt_core.grounders.openai_grounder import OpenAIGrounder
    from ivt_core.store.runs import get_run

    stored = {}
    if config.resume_run is not None:
        with workspace.connect() as db:
            stored = get_run(db, config.resume_run)["config"]
    return OpenAIGrounder(model_path, stored.get("endpoint_model") or config.endpoint_model,
                          stored.get("family") or config.endpoint_family or None,
                          api_key=config.endpoint_api_key or os.environ.get("IVT_ENDPOINT_API_KEY") or None,
                          concurrency=config.concurrency)


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core import distributed_eval
    from ivt_core.config.evaluation import EvalConfig
    from ivt_core.config.flags import config_from_args
    from ivt_core.evaluate import evaluate, load_eval_samples
    from ivt_core.jobs import JobReporter, stored_config, submit
    from ivt_core.workspace import Workspace

    if distributed_eval.rank() > 0:  # a rank of a launch other than 0 reads images only, never the store
        workspace = Workspace.at(args.workspace)
    else:
        workspace = Workspace.open(args.workspace)
    base = stored_config(workspace, args.as_job_id) if args.as_job_id else None
    config = config_from_args(EvalConfig, args, base)
    if args.job:
        job_id = submit(workspace, "eval", config)
        print(f"started job {job_id}; follow it with `ivt jobs show {job_id}`", file=sys.stderr)
        print(json.dumps({"job_id": job_id}) if args.json else job_id)
        return 0
    config.check()
    if distributed_eval.launched():  # under accelerate launch: this process is one rank of several
        if config.endpoint:
            raise InvalidInputError("--endpoint runs on one process (the server batches); drop accelerate launch")
        with tqdm(desc=f"eval rank {distributed_eval.rank()}", unit="sample", file=sys.stderr) as bar:
            result = distributed_eval.evaluate_ranks(workspace, lambda: _resolve(workspace, config), config.device,
                                                     config.load_in_4bit, bar.update, config.resume_run, config.seed)
        return _print_result(args, result) if result is not None else 0
    request, model_path, adapter, coords = _resolve(workspace, config)
    samples = load_eval_samples(workspace, request)
    if request.loop.sampling.do_sample:
        import torch

        torch.manual_seed(config.seed)
    total = len(samples)
    with JobReporter(workspace, args.as_job_id) as reporter:
        with tqdm(total=total, desc=f"eval T={request.loop.steps}", unit="sample", file=sys.stderr) as bar:
            def advance(n: int) -> None:
                bar.update(n)
                reporter.progress(bar.n, total, f"{bar.n}/{total} samples")

            if config.gpus > 1:
                result = distributed_eval.evaluate_launched(
                    workspace, model_path, request, config.gpus, adapter, coords,
                    "cpu" if config.device == "cpu" else "cuda", config.load_in_4bit, advance, args.as_job_id,
                    config.resume_run)
                reporter.link_run(result.run_id)
                return _print_result(args, result)
            grounder = _grounder(workspace, config, model_path, adapter, coords)
            result = evaluate(workspace, grounder, model_path, request, adapter, samples, progress=advance,
                              resume_run=config.resume_run, job_id=args.as_job_id)
        reporter.link_run(result.run_id)
    return _print_result(args, result)


def _resolve(workspace, config):
    """The request, model, adapter and coords of an evaluation: the stored ones of a run to resume, else the
    config's (the default shapes splits written first when they are missing)."""
    from ivt_core.bootstrap import DEFAULT_SPLITS, ensure_default_data, toy_model_path
    from ivt_core.evaluate import EvalRequest

    if config.resume_run is not None:
        return _request_from_run(workspace, config.resume_run)
    request = EvalRequest(config.dataset, config.split, config.loop_config(_dataset_kind(workspace, config)),
                          config.limit)
    if config.dataset == "shapes" and config.split in DEFAULT_SPLITS:
        written = ensure_default_data(workspace)
        if written:
            print(f"generated the default shapes-world splits first: {written}", file=sys.stderr)
    model = config.endpoint or (Path(config.model) if config.model else toy_model_path())
    return request, model, config.adapter or None, config.coords or None


def _dataset_kind(workspace, config) -> str:
    from ivt_core.store.samples import get_dataset

    if config.dataset == "shapes":
        return "shapes"  # the default splits may not exist yet (they are written just below)
    with workspace.connect() as db:
        dataset = get_dataset(db, config.dataset)
    return dataset["kind"] if dataset else ""


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
    from ivt_core.render import describe
    from ivt_core.report import build_report, kinds_text, report_html, text_table
    from ivt_core.workspace import Workspace

    report = build_report(Workspace.existing(args.workspace).connect(), args.run_id)
    if args.html:
        Path(args.html).write_text(report_html(report))
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    elif not args.html:
        run = report["run"]
        print(f"run {run['id']}: {report['model']['name']} on {run['dataset']}/{run['split']}, T={run['steps']}, "
              f"policy {run['policy']}, box drawn as {describe(report['render_style'])}, "
              f"{report['metrics']['n']} samples, {run['status']}")
        print(text_table(report["metrics"]))
        print(kinds_text(report["error_kinds"]))
        print(kinds_text(report["error_kinds_at_0.9"], 0.9))
        for name, m in report["by_source"].items() if len(report["by_source"]) > 1 else ():
            print(f"\nsource {name} ({m['n']} samples)\n{text_table(m)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ivt_core.report import compare_runs, compare_text
    from ivt_core.workspace import Workspace

    result = compare_runs(Workspace.existing(args.workspace).connect(), args.run_ids)
    print(json.dumps(result) if args.json else compare_text(result))
    return 0


def cmd_paper_table(args: argparse.Namespace) -> int:
    from ivt_core.paper_table import paper_table, table_text
    from ivt_core.workspace import Workspace

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    try:
        best_of = [int(x) for x in args.best_of.split(",") if x.strip()] if args.best_of else []
    except ValueError:
        raise InvalidInputError(f"--best-of takes run ids separated by commas, got {args.best_of!r}") from None
    table = paper_table(Workspace.existing(args.workspace).connect(), args.run_ids, labels, best_of)
    print(json.dumps(table) if args.json else table_text(table))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.data.sample import load_image
    from ivt_core.evaluate import check_images
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.probe import probe_samples, rows_as_dicts, summarize_probe
    from ivt_core.store.samples import get_sample, get_samples
    from ivt_core.workspace import Workspace

    workspace = Workspace.existing(args.workspace)
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
    print(f"step 0 (first answer) Acc@0.5 {summary['step0_acc@0.5']:.3f} over {summary['samples']} samples")
    print(f"{'drawn box':<14}{'n':>4}{'drawn IoU':>11}{'next IoU':>10}{'next Acc@0.5':>14}{'moved':>8}{'readable':>10}"
          f"{'says correct':>14}")
    for name, d in summary["per_counterfactual"].items():
        def fmt(v):
            return f"{v:.3f}" if v is not None else "-"

        print(f"{name:<14}{d['n']:>4}{fmt(d['mean_shown_iou']):>11}{fmt(d['mean_next_iou']):>10}"
              f"{d['acc@0.5']:>14.3f}{fmt(d['mean_moved']):>8}{d['readable']:>10.0%}"
              f"{d['says_correct']:>14.0%}")
    print("look-alike: another object of the asked shape drawn (the shapes toy's usual mistake); re-ask: the same "
          "question again with no box (a model that holds a conversation answers it as at step 0)")
    print("says correct: the answer's verdict that the drawn box is correct (it then answers with that box, as the "
          "loop reads it); a verifier says it for the ground truth, not for a look-alike, shifted or random box")
    corr = summary["corr_shown_iou_vs_moved"]
    print(f"correlation of drawn-box IoU with how much the model moved it: "
          f"{'n/a (too few readable refinements)' if corr is None else f'{corr:+.3f}'} "
          f"over {summary['pairs_used']} pairs")
    print(summary["reading"])
    return 0


def cmd_verifier(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.evaluate import register_evaluated_model
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.store.runs import get_run
    from ivt_core.verifier import judge_run, store_verdict, summary_text
    from ivt_core.workspace import Workspace

    workspace = Workspace.existing(args.workspace)
    db = workspace.connect()
    get_run(db, args.run_id)  # an unknown run is said before the model loads
    grounder = TransformersGrounder.load(_model_path(args), args.adapter, False, args.device, args.coords)
    with tqdm(desc="verifier", unit="box", file=sys.stderr) as bar:
        summary, rows = judge_run(workspace, db, grounder, args.run_id, args.iou, args.limit, args.batch_size,
                                  bar.update, args.reasoning_first)
    store_verdict(db, register_evaluated_model(db, grounder.name, grounder.family, _model_path(args), args.adapter),
                  summary)
    print(json.dumps({"summary": summary, "rows": rows}) if args.json else summary_text(summary))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ivt_core.store.models import model_names
    from ivt_core.store.runs import list_runs, run_loop_text
    from ivt_core.workspace import Workspace

    db = Workspace.existing(args.workspace).connect()
    runs = list_runs(db)
    if not runs:
        print("no runs in this workspace yet (`ivt eval --dataset shapes --split val` makes one)")
    names = model_names(db)
    width = max((len(names.get(r["model_id"], "?")) for r in runs), default=0)
    for run in runs:
        m = run["metrics"] or {}
        score = (f"step0 Acc@0.5 {m['step0']['acc@0.5']:.3f}, final {m['final']['acc@0.5']:.3f}"
                 if m else run["status"])
        where = f"{run['dataset']}/{run['split']}"
        model = names.get(run["model_id"], "?")
        print(f"{run['id']:>4}  {model:<{width}}  {where:<14}  {run_loop_text(run):<26} n={run['n_samples']}  {score}")
    return 0


