"""Evaluation spread over several GPUs: one worker process per GPU, each running a share of the samples.

This process creates the run, starts N workers (``ivt eval --resume-run RUN --shard i/N``, an argument list,
never a shell), each with ``CUDA_VISIBLE_DEVICES`` set to its GPU, and watches them: progress is the number of
trajectories stored in the run, a worker that fails stops the others and fails the run with its log's tail,
SIGTERM / Ctrl-C stops them all and leaves the run cancelled (resumable). When all are done the metrics are
computed over every stored trajectory, exactly as for a one-process run, so the merged run is the run one GPU
would have written whenever each sample's answers do not depend on its batch-mates (greedy decoding; true in
float32, and what docs/LOG.md reports for bf16 on the GPUs). With ``--device cpu`` the workers are CPU
processes (for machines without GPUs, and the tests).

Why processes and not torch.distributed: evaluation needs no communication between ranks, the store is the
merge point, and a crashed worker then costs only its unsaved batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ivt_core.errors import InvalidInputError, IVTError
from ivt_core.evaluate import EvalRequest, EvalResult, load_eval_samples, start_run
from ivt_core.metrics import run_metrics
from ivt_core.store.runs import count_trajectories, finish_run, get_run, load_trajectories, set_run_status
from ivt_core.workspace import Workspace

POLL_SECONDS = 1.0


class WorkerFailed(IVTError):
    pass


def check_gpus(gpus: int, device: str) -> None:
    """Raise InvalidInputError unless this machine can run ``gpus`` workers on ``device``."""
    if gpus < 1:
        raise InvalidInputError(f"--gpus must be at least 1, got {gpus}")
    if device == "cpu":
        return
    import torch

    available = torch.cuda.device_count()
    if available < gpus:
        raise InvalidInputError(
            f"--gpus {gpus} asked for, but this machine has {available} CUDA GPU(s); use --gpus {available}"
            if available else f"--gpus {gpus} asked for, but this machine has no CUDA GPU; use --device cpu "
            "to spread the work over CPU processes")


def evaluate_parallel(
    workspace: Workspace,
    model_path: str | Path,
    request: EvalRequest,
    gpus: int,
    adapter_path: str | Path | None = None,
    coords: str | None = None,
    device: str = "cuda",
    load_in_4bit: bool = False,
    progress: Callable[[int], None] | None = None,
    job_id: int | None = None,
    resume_run: int | None = None,
) -> EvalResult:
    """Run the request's samples on ``gpus`` worker processes; returns the merged run's id and metrics."""
    from ivt_core.errors import JobCancelled
    from ivt_core.grounders.transformers_grounder import describe_model

    check_gpus(gpus, device)
    samples = load_eval_samples(workspace, request)
    db = workspace.connect()
    try:
        if resume_run is not None:
            if get_run(db, resume_run)["status"] == "done":
                raise InvalidInputError(f"run {resume_run} is complete; nothing to resume")
            run_id = resume_run
            set_run_status(db, run_id, "running", pid=os.getpid(), job_id=job_id)
        else:
            name, family = describe_model(model_path, adapter_path, coords)
            run_id = start_run(db, name, family, model_path, request, adapter_path, job_id)
        logs = workspace.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        workers = []
        try:
            for index in range(gpus):
                log = logs / f"run{run_id}-worker{index}.log"
                workers.append((subprocess.Popen(
                    _worker_command(workspace, run_id, index, gpus, device, load_in_4bit),
                    stdout=subprocess.DEVNULL, stderr=log.open("w"), env=_worker_env(index, gpus, device),
                    start_new_session=True), log))
            _watch(db, run_id, workers, progress)
            metrics = run_metrics(load_trajectories(db, run_id))
            if metrics["n"] != len(samples):
                raise WorkerFailed(f"the workers stored {metrics['n']} of {len(samples)} samples; "
                                   f"resume with `ivt eval --resume-run {run_id} --gpus {gpus}`")
            finish_run(db, run_id, metrics)
            return EvalResult(run_id, metrics)
        except (JobCancelled, KeyboardInterrupt):
            _stop(workers)
            set_run_status(db, run_id, "cancelled", "stopped by the user; resume to finish")
            raise
        except BaseException as exc:
            _stop(workers)
            set_run_status(db, run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
    finally:
        db.close()


def _worker_command(workspace: Workspace, run_id: int, index: int, count: int, device: str,
                    load_in_4bit: bool) -> list[str]:
    command = [sys.executable, "-m", "ivt_core.cli", "eval", "--workspace", str(workspace.root),
               "--resume-run", str(run_id), "--shard", f"{index}/{count}",
               "--device", "cpu" if device == "cpu" else "cuda"]
    return command + (["--4bit"] if load_in_4bit else [])


def _worker_env(index: int, count: int, device: str) -> dict:
    env = dict(os.environ)
    if device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(count)]
        env["CUDA_VISIBLE_DEVICES"] = ids[index]
    return env


def _watch(db, run_id: int, workers, progress: Callable[[int], None] | None) -> None:
    reported = count_trajectories(db, run_id)
    if progress and reported:
        progress(reported)
    while True:
        codes = [process.poll() for process, _ in workers]
        stored = count_trajectories(db, run_id)
        if progress and stored > reported:
            progress(stored - reported)
            reported = stored
        for index, ((_, log), code) in enumerate(zip(workers, codes, strict=True)):
            if code not in (None, 0):
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise WorkerFailed(f"worker {index} exited with code {code}: "
                                   + " | ".join(tail) + f" (full log: {log})")
        if all(code == 0 for code in codes):
            return
        time.sleep(POLL_SECONDS)


def _stop(workers) -> None:
    import signal

    for process, _ in workers:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 30
    for process, _ in workers:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
