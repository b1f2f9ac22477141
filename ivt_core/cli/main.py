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

from ivt_core import logs
from ivt_core.cli.evaluation import (
    cmd_compare,
    cmd_eval,
    cmd_paper_table,
    cmd_probe,
    cmd_report,
    cmd_runs,
    cmd_verifier,
)
from ivt_core.cli.jobs import cmd_jobs, cmd_train
from ivt_core.cli.traces import add_parsers as add_trace_parsers
from ivt_core.config.evaluation import EvalConfig
from ivt_core.config.flags import add_config_arguments
from ivt_core.config.serving import ServeConfig
from ivt_core.config.training import GRPOConfig, SFTConfig
from ivt_core.data.shapes import WORLDS
from ivt_core.errors import InvalidInputError, IVTError

MAX_COUNT = 1_000_000_000  # counts, ids and limits above this are typing mistakes (SQLite stores 64-bit integers)


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
    if number > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT:,}, got {number}")
    return number


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from ivt_core.tinykit import TinySpec, build_tiny_model

    out = build_tiny_model(args.out, args.family, TinySpec(seed=args.seed))
    print(f"wrote a tiny random {args.family} checkpoint to {out}", file=sys.stderr)
    return 0


def cmd_data_shapes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ivt_core.data.shapes import named_world
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.workspace import Workspace

    world = named_world(args.world)
    workspace = Workspace.open(args.workspace)
    with tqdm(total=args.n, desc=f"shapes {args.split}", unit="scene", file=sys.stderr) as bar:
        count = write_shapes_split(workspace, args.split, args.n, args.seed, args.name, world, progress=bar.update)
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
                             args.limit, args.name, sizes, args.seed, args.replace)
    print(json.dumps(summary.to_dict()) if args.json else summary.text())
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from ivt_core.store.samples import list_datasets
    from ivt_core.workspace import Workspace

    db = Workspace.existing(args.workspace).connect()
    for dataset in list_datasets(db):
        splits = ", ".join(f"{k}: {v}" for k, v in sorted(dataset["splits"].items())) or "empty"
        print(f"{dataset['name']} ({dataset['kind']}): {splits}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the command's --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def cmd_serve(args: argparse.Namespace) -> int:
    from ivt_core.config.flags import config_from_args
    from ivt_core.serve import serve

    config = config_from_args(ServeConfig, args)
    config.model = args.checkpoint or config.model
    config.api_key = config.api_key or os.environ.get("IVT_SERVE_API_KEY", "")
    serve(config.check(), announce=lambda line: print(line, file=sys.stderr, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ivt_core.families import FAMILIES

    parser = _Parser(prog="ivt", description="IVT Studio: iterative visual thinking workbench.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics (engine choice, jobs "
                        "started, migrations) to stderr")
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
    p.add_argument("--world", default="shapes-v1", choices=list(WORLDS),
                   help="shapes-v1: every object fully visible; shapes-v2: also tiny and partly hidden shapes "
                        "(near misses to refine)")
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
    p.add_argument("--replace", action="store_true", help="replace samples of a split the dataset already holds")
    p.add_argument("--json", action="store_true", help="print the import summary as JSON")
    p.set_defaults(func=cmd_data_import)
    p = data.add_parser("list", help="list the datasets of a workspace")
    p.add_argument("--workspace", default=None)
    p.set_defaults(func=cmd_data_list)

    p = sub.add_parser("eval", help="run the IVT loop on a dataset split and store the run")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $IVT_WORKSPACE or ./workspace)")
    add_config_arguments(p, EvalConfig)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")
    p.add_argument("--job", action="store_true", help="run in the background as a job and return at once")
    p.add_argument("--job-id", dest="as_job_id", type=_positive, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_eval)

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

    p = sub.add_parser("paper-table", help="the paper's rows (single shot, naive IVT, each trained model + IVT) "
                                           "with stopping rules, oracle, per-step fix/break and McNemar tests")
    p.add_argument("run_ids", type=_positive, nargs="+", metavar="RUN_ID",
                   help="the base model's run first (its step 0 is the single shot), then each trained model's")
    p.add_argument("--labels", default=None, help="comma-separated row names, one per run (default: model names)")
    p.add_argument("--best-of", default=None, metavar="RUN,RUN",
                   help="sampled single-shot runs of the base model (`ivt eval --steps 0 --temperature 0.7 --seed "
                        "N`): adds the best-of-K self-selected row, K = these runs + the greedy one")
    p.add_argument("--workspace", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_paper_table)

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

    p = sub.add_parser("verifier", help="can a model tell a run's right step-0 boxes from its wrong ones? "
                                        "(AUROC of its P(\"The box is correct.\"))")
    p.add_argument("run_id", type=_positive, metavar="RUN_ID", help="the run whose step-0 boxes are judged (a base "
                                                                    "model's)")
    p.add_argument("--workspace", default=None)
    p.add_argument("--model", default=None, help="the judging checkpoint (default: the shipped toy model)")
    p.add_argument("--adapter", default=None, help="its adapter (e.g. the SFT one)")
    p.add_argument("--device", default="auto")
    p.add_argument("--coords", default=None)
    p.add_argument("--iou", type=float, default=0.5, help="a box is right at this IoU or above")
    p.add_argument("--limit", type=_positive, default=None, help="judge the first N boxes only")
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--reasoning-first", action="store_true",
                   help="the model reasons before its verdict (\"It is on the blue circle. Wrong colour.\"): read "
                        "P(keep) after its own greedy reasoning instead of at the start of its answer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verifier)

    add_trace_parsers(sub, _Parser, _positive)

    train = sub.add_parser("train", help="SFT or GRPO (`ivt train sft --help`); --job runs it in the background"
                           ).add_subparsers(dest="trainer", required=True, parser_class=_Parser)
    for name, cls, helptext in (("sft", SFTConfig, "SFT on approved corrective traces"),
                                ("grpo", GRPOConfig, "GRPO through the IVT loop")):
        p = train.add_parser(name, help=helptext, description=helptext)
        add_config_arguments(p, cls)
        p.add_argument("--job", action="store_true", help="run in the background as a job and return at once")
        p.set_defaults(func=cmd_train, config_class=cls)

    p = sub.add_parser("serve", help="a local checkpoint behind an OpenAI-compatible chat endpoint (for "
                                     "`ivt eval --endpoint URL` from another machine, or any OpenAI client)")
    p.add_argument("checkpoint", nargs="?", default=None, metavar="MODEL",
                   help="local checkpoint folder (same as --model; default: the shipped toy model)")
    add_config_arguments(p, ServeConfig)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("runs", help="list the runs of a workspace")
    p.add_argument("--workspace", default=None)
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    logs.setup(args.verbose)
    try:
        in_job = getattr(args, "as_job_id", None) or getattr(args, "job_id", None)
        other_rank = int(os.environ.get("RANK", "0")) > 0  # a distributed rank other than 0 never writes the store
        if getattr(args, "workspace", "absent") != "absent" and not in_job and not other_rank:
            from ivt_core.jobs import reconcile
            from ivt_core.workspace import Workspace

            if Workspace.at(args.workspace).db_path.is_file():  # a new one has no jobs; a typo gets no workspace
                reconcile(Workspace.open(args.workspace))
        return args.func(args)
    except IVTError as exc:
        print(f"ivt: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ivt jobs list | head`: the reader has what it wanted; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file that cannot be read or written, a full disk: the user can fix it
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"ivt: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ivt: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
