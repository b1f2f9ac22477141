"""Evaluating a model on a dataset split: load, check, run the loop, store the run, compute the metrics.

Everything that can be checked is checked before the run row is written (the split exists, every image opens,
the model folder is a VLM), so a mistake in the input stores nothing. The run's trajectories are then written
batch by batch, so a crash loses at most the batch in flight; the run says how it ended (done / cancelled /
failed / interrupted) and an unfinished run can be resumed. Metrics are computed only for complete runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ivt_core.data.sample import Sample, load_image
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.grounders.base import Grounder
from ivt_core.loop import LoopConfig, run_loop
from ivt_core.metrics import run_metrics
from ivt_core.store.models import register_model
from ivt_core.store.runs import (
    add_trajectories,
    create_run,
    done_sample_ids,
    finish_run,
    get_run,
    load_trajectories,
    set_run_status,
)
from ivt_core.store.samples import get_samples
from ivt_core.workspace import Workspace


@dataclass(frozen=True)
class EvalRequest:
    dataset: str
    split: str
    loop: LoopConfig
    limit: int | None = None


@dataclass(frozen=True)
class EvalResult:
    run_id: int
    metrics: dict


def check_images(workspace: Workspace, samples: list[Sample]) -> None:
    """Raise NotFoundError / InvalidInputError naming the first sample whose image is missing or unreadable."""
    for sample in samples:
        path = workspace.resolve(sample.image_path)
        if not path.is_file():
            raise NotFoundError(f"image of sample {sample.id} not found: {path} (restore it or re-import the dataset)")
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidInputError(f"image of sample {sample.id} is unreadable: {path} ({exc})") from exc


def load_eval_samples(workspace: Workspace, request: EvalRequest) -> list[Sample]:
    """The samples a request covers, checked. Raises IVTError subclasses saying what to fix."""
    request.loop.check()
    if request.limit is not None and request.limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, got {request.limit}")
    db = workspace.connect()
    try:
        samples = get_samples(db, request.dataset, request.split, request.limit)
    finally:
        db.close()
    check_images(workspace, samples)
    return samples


def start_run(db, name: str, family, model_path: str | Path, request: EvalRequest,
              adapter_path: str | Path | None = None, job_id: int | None = None, extra: dict | None = None) -> int:
    """Register the model and create a running run for ``request``; returns the run id. ``model_path`` is a
    checkpoint folder or a server's URL; ``extra``: what a resumed run needs to rebuild its grounder."""
    model_id = register_evaluated_model(db, name, family, model_path, adapter_path)
    config = {**asdict(request.loop), "limit": request.limit, "model_path": str(model_path),
              "adapter_path": str(adapter_path or ""), "coords": family.convention, "family": family.name,
              **(extra or {})}
    return create_run(
        db, model_id, request.dataset, request.split, request.loop.steps, request.loop.policy,
        family.prompt_family, request.loop.prompt_version, request.loop.render.to_dict(), config,
        pid=os.getpid(), job_id=job_id,
    )


@contextmanager
def marks_run_end(db, run_id: int):
    """Within: an exception leaves the run ``cancelled`` (stopped by the user: SIGTERM, Ctrl-C; resumable) or
    ``failed`` (with the error), and goes on up."""
    from ivt_core.errors import JobCancelled

    try:
        yield
    except (JobCancelled, KeyboardInterrupt):
        set_run_status(db, run_id, "cancelled", "stopped by the user; resume to finish")
        raise
    except BaseException as exc:
        set_run_status(db, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise


def register_evaluated_model(db, name: str, family, model_path: str | Path,
                             adapter_path: str | Path | None = None) -> int:
    """The registry id of a checkpoint (absolute paths) or a server's URL, registered if new."""
    base = str(model_path) if is_endpoint(model_path) else str(Path(model_path).resolve())
    return register_model(db, name, base, family.name,
                          adapter_path=str(Path(adapter_path).resolve()) if adapter_path else "")


def refuse_changed_weights(db, run: dict) -> None:
    """Raise InvalidInputError when the weights of ``run``'s model are no longer the ones it started with: a
    resumed run would mix two models' answers."""
    from ivt_core.store.models import weights_changed

    changed = weights_changed(db, run["model_id"])
    if changed:
        raise InvalidInputError(f"cannot resume run {run['id']}: {changed}; start a new run with these weights")


def reopen_run(db, run_id: int, **fields) -> None:
    """Mark stored run ``run_id`` running again in this process (and ``fields``, e.g. its job), to resume it. Raises
    InvalidInputError when it is complete or when its model's weights changed since it started."""
    run = get_run(db, run_id)
    if run["status"] == "done":
        raise InvalidInputError(f"run {run_id} is complete; nothing to resume")
    refuse_changed_weights(db, run)
    set_run_status(db, run_id, "running", pid=os.getpid(), **fields)


def is_endpoint(model_path: str | Path) -> bool:
    """Whether a run's model is a server's URL (``ivt eval --endpoint``) rather than a checkpoint folder."""
    return isinstance(model_path, str) and model_path.startswith(("http://", "https://"))


def evaluate(
    workspace: Workspace,
    grounder: Grounder,
    model_path: str | Path,
    request: EvalRequest,
    adapter_path: str | Path | None = None,
    samples: list[Sample] | None = None,
    progress: Callable[[int], None] | None = None,
    resume_run: int | None = None,
    job_id: int | None = None,
) -> EvalResult:
    """Run ``grounder`` over the request's samples and store the run; returns its id and metrics.

    Trajectories are stored batch by batch. If the loop stops half-way the run keeps what it stored and is
    marked ``cancelled`` (SIGTERM, Ctrl-C) or ``failed`` (with the error); ``resume_run`` continues such a run
    with the samples it lacks. Spread over processes or machines: ``distributed_eval``.
    """

    samples = samples if samples is not None else load_eval_samples(workspace, request)
    loader = lambda s: load_image(workspace.resolve(s.image_path))  # noqa: E731
    db = workspace.connect()
    try:
        if resume_run is not None:
            reopen_run(db, resume_run, job_id=job_id)
            run_id = resume_run
            done = done_sample_ids(db, run_id)
        else:
            run_id = start_run(db, grounder.name, grounder.family, model_path, request, adapter_path, job_id,
                               getattr(grounder, "run_settings", None))
            done = set()
        todo = [s for s in samples if s.id not in done]
        if progress and done:
            progress(len(samples) - len(todo))
        with marks_run_end(db, run_id):
            for batch in run_loop(grounder, todo, request.loop, loader):
                add_trajectories(db, run_id, batch)
                if progress:
                    progress(len(batch))
            metrics = run_metrics(load_trajectories(db, run_id))
            finish_run(db, run_id, metrics)
        return EvalResult(run_id, metrics)
    finally:
        db.close()
