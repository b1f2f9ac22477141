"""What a fresh workspace runs on first start, so that every tab of the app has something real to show.

The app calls ``start_first_jobs`` once the shipped models are registered (``bootstrap``); the jobs are ordinary
jobs with ordinary configs, queued one after the other so that a laptop is not asked to do two at once.
"""

from __future__ import annotations

from ivt_core import jobs
from ivt_core.config.evaluation import EvalConfig
from ivt_core.config.synthesis import SynthConfig
from ivt_core.store.jobs import list_jobs
from ivt_core.store.models import get_model
from ivt_core.store.runs import list_runs
from ivt_core.workspace import Workspace

FIRST_EVAL = {"dataset": "shapes", "split": "val", "steps": 2, "limit": 100}
TRACE_SOURCE = {"dataset": "shapes", "split": "train", "steps": 0, "limit": 200}  # traces never from val or test
FIRST_SYNTH = {"steps": 2, "include_zero": True, "keep_ratio": 0.2}


# the verdicts each shipped model is evaluated with (default: its own): the name-first SFT toy with both, the GRPO
# toy with the derived one only (with its own it keeps almost every box: docs/LOG.md, sessions 24 and 26)
FIRST_VERDICTS = {"toy-model-sft": ("own", "derived"), "toy-model-grpo": ("derived",)}


def start_first_jobs(workspace: Workspace, models: dict[str, int]) -> list[int]:
    """On a workspace that has never run anything: an evaluation of the toy model on val (Explore), its single
    shot on train samples and traces synthesized from those mistakes (Traces: training data comes from the train
    split only), and evaluations of each other shipped model on the same val samples (Compare): the SFT toy with
    its own verdicts and with the verdict its name implies (``--verdict derived``: where the toy's loop gains),
    the GRPO toy with the derived verdict (with its own it keeps almost every box). Returns the job ids, or []
    when the workspace already has runs or jobs."""
    with workspace.connect() as db:
        if list_runs(db) or list_jobs(db, limit=1):
            return []
        rows = {name: get_model(db, model_id) for name, model_id in models.items()}
    toy = rows.pop("toy-model")
    first = jobs.submit(workspace, "eval", EvalConfig.for_model(toy, **FIRST_EVAL))
    source = jobs.submit(workspace, "eval", EvalConfig.for_model(toy, **TRACE_SOURCE), after=first,
                         needs_success=False)
    started = [first, source, jobs.submit(workspace, "synth", SynthConfig(run_of_job=source, **FIRST_SYNTH),
                                          after=source)]
    for name, row in rows.items():
        for verdict in FIRST_VERDICTS.get(name, ("own",)):
            started.append(jobs.submit(workspace, "eval", EvalConfig.for_model(row, verdict=verdict, **FIRST_EVAL),
                                       after=started[-1]))
    return started
