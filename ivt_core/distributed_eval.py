"""Evaluation spread over processes and machines with accelerate.

Two ways in, one code path:

* ``ivt eval --gpus N ...`` on one machine: this process checks the request, creates the run and starts
  ``accelerate launch --multi_gpu --num_processes N -m ivt_core.cli eval --resume-run RUN ...`` (an argument
  list, never a shell; ``--multi_gpu`` is accelerate's name for its torchrun launcher, which also starts CPU
  processes for ``--device cpu``). It watches the launch: progress is what the ranks have written, a failed
  launch fails the run with its log's tail, a cancelled job stops the launch and leaves the run resumable.
* ``accelerate launch [--num_machines M --machine_rank R --main_process_ip HOST ...] -m ivt_core.cli eval
  --dataset D --split S ...`` on every machine: the ranks see ``WORLD_SIZE`` > 1 and rank 0 creates the run.

Inside the launch (``evaluate_ranks``): rank 0 resolves the request, reads and checks the samples, creates or
resumes the run and broadcasts the plan (run, request, samples, ids already done). Rank r runs the samples at
positions r, r+W, r+2W... (interleaved: every rank gets easy and hard samples alike and the tail is at most one
sample per rank). Rank 0 writes its trajectories to the store as they end (Explore sees the run grow); a rank
r > 0 never opens the store: it appends each trajectory to its shard file ``shards/run{RUN}/rank{r}.jsonl``
(on a crash it loses at most the group in flight, and a resumed run picks the file up). At the end the
trajectories are gathered on rank 0, which alone writes them (SQLite is never written from two machines),
computes the metrics over every trajectory exactly as a one-process run does, and finishes the run. With
greedy decoding the merged run is the one-process run whenever a sample's answers do not depend on its
batch-mates (float32; docs/LOG.md for bf16 on GPUs).

Why accelerate rather than the worker pool this replaces: launching on any number of machines, rendezvous and
object collectives come with it (the trainers already use it). What it does not have is the store, the
resumable shards and the run's life cycle; those are here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

from ivt_core.errors import InvalidInputError, IVTError
from ivt_core.evaluate import (
    EvalRequest,
    EvalResult,
    load_eval_samples,
    marks_run_end,
    reopen_run,
    start_run,
)
from ivt_core.metrics import run_metrics
from ivt_core.records import Trajectory, trajectory_from_dict, trajectory_to_dict
from ivt_core.store.runs import (
    add_trajectories,
    count_trajectories,
    done_sample_ids,
    finish_run,
    get_run,
    load_trajectories,
    set_run_status,
)
from ivt_core.workspace import Workspace

POLL_SECONDS = 1.0
COLLECTIVE_TIMEOUT = timedelta(hours=12)  # ranks wait for each other at the start and the end

# What rank 0 resolves from the command line: (request, model path, adapter path or None, coords or None).
Resolved = tuple[EvalRequest, Path, "str | None", "str | None"]


class LaunchFailed(IVTError):
    pass


def launched() -> bool:
    """Whether this process is one rank of several (started by accelerate launch or torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's global rank (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def shard_dir(workspace: Workspace, run_id: int) -> Path:
    return workspace.root / "shards" / f"run{run_id}"


def check_gpus(gpus: int, device: str) -> None:
    """Raise InvalidInputError unless this machine can run ``gpus`` ranks on ``device``."""
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


# ---- the process that starts the launch (``ivt eval --gpus N``) ----

def evaluate_launched(
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
    """Create (or reopen) the run here, run it under ``accelerate launch`` with ``gpus`` processes, watch it;
    returns the finished run's id and metrics."""
    from ivt_core.grounders.transformers_grounder import describe_model

    check_gpus(gpus, device)
    samples = load_eval_samples(workspace, request)
    db = workspace.connect()
    try:
        if resume_run is not None:
            reopen_run(db, resume_run, job_id=job_id)
            run_id = resume_run
        else:
            name, family = describe_model(model_path, adapter_path, coords)
            run_id = start_run(db, name, family, model_path, request, adapter_path, job_id)
        log = workspace.root / "logs" / f"run{run_id}-accelerate.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with marks_run_end(db, run_id):
            with log.open("w") as sink:
                process = subprocess.Popen(launch_command(workspace, run_id, gpus, device, load_in_4bit),
                                           stdout=sink, stderr=subprocess.STDOUT, env=_launch_env(gpus, device),
                                           start_new_session=True)
            try:
                _watch(db, workspace, run_id, len(samples), process, log, progress)
            except BaseException:
                _stop(process)
                raise
        return EvalResult(run_id, get_run(db, run_id)["metrics"])
    finally:
        db.close()


def launch_command(workspace: Workspace, run_id: int, processes: int, device: str, load_in_4bit: bool) -> list[str]:
    """The ``accelerate launch`` argument list that runs ``run_id`` on ``processes`` ranks of this machine."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "ivt_core.cli", "eval", "--workspace", str(workspace.root),
               "--resume-run", str(run_id), "--device", "cpu" if device == "cpu" else "cuda"]
    return command + (["--4bit"] if load_in_4bit else [])


def _free_port() -> int:
    """A free TCP port for the ranks' rendezvous (two evaluations on one machine must not share one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_env(processes: int, device: str) -> dict:
    env = dict(os.environ)
    if device == "cpu":  # the machine's cores shared between the ranks (torchrun would give each one thread)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # a launch from inside a launch starts afresh
        env.pop(name, None)
    return env


def _written(db, workspace: Workspace, run_id: int) -> int:
    """Trajectories the ranks have written so far: rank 0's in the store, the others' in shard files."""
    lines = 0
    for path in shard_dir(workspace, run_id).glob("rank*.jsonl"):
        try:
            lines += path.read_bytes().count(b"\n")
        except OSError:  # removed while the launch finishes
            pass
    return count_trajectories(db, run_id) + lines


def _watch(db, workspace: Workspace, run_id: int, total: int, process: subprocess.Popen, log: Path,
           progress: Callable[[int], None] | None) -> None:
    reported = 0
    while True:
        code = process.poll()
        written = min(total, _written(db, workspace, run_id))
        if progress and written > reported:
            progress(written - reported)
            reported = written
        if code is not None:
            break
        time.sleep(POLL_SECONDS)
    if code != 0 or get_run(db, run_id)["status"] != "done":
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-5:]
        raise LaunchFailed(f"the launch exited with code {code}: " + " | ".join(tail)
                           + f" (full log: {log}; resume with `ivt eval --resume-run {run_id} --gpus N`)")
    if progress and total > reported:
        progress(total - reported)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---- inside the launch: one rank ----

def evaluate_ranks(
    workspace: Workspace,
    resolve: Callable[[], Resolved],
    device: str = "auto",
    load_in_4bit: bool = False,
    progress: Callable[[int], None] | None = None,
    resume_run: int | None = None,
    seed: int = 0,
) -> EvalResult | None:
    """This rank's part of a launched evaluation (see the module docstring). ``resolve`` runs on rank 0 only
    and gives the request, model and adapter. Rank 0 returns the finished run; the other ranks None."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    state = PartialState(cpu=device == "cpu", timeout=COLLECTIVE_TIMEOUT)
    me, world = state.process_index, state.num_processes
    db = workspace.connect() if me == 0 else None
    try:
        plan: dict = {}
        if me == 0:
            try:
                plan = _prepare(workspace, db, resolve, resume_run, seed)
            except IVTError as exc:
                broadcast_object_list([{"error": str(exc)}])  # the others must not wait for a run that never comes
                raise
        plan = broadcast_object_list([plan])[0]
        if "error" in plan:
            raise InvalidInputError(f"rank 0 could not start the run: {plan['error']}")
        run_id, request, samples = plan["run_id"], plan["request"], plan["samples"]
        shard = None if me == 0 else shard_dir(workspace, run_id) / f"rank{me}.jsonl"
        kept = _read_shard(shard) if shard else []  # this rank's file from an earlier launch of the run
        skip = set(plan["done"]) | {t.sample_id for t in kept}
        mine = [s for k, s in enumerate(samples) if k % world == me and s.id not in skip]
        if progress and kept:
            progress(len(kept))
        _run_share(workspace, db, run_id, request, plan, mine, shard, device, load_in_4bit, state, progress)
        gathered = gather_object([trajectory_to_dict(t) for t in (_read_shard(shard) if shard else [])])
        result = _merge(workspace, db, run_id, samples, gathered) if me == 0 else None
        state.wait_for_everyone()  # rank 0 has stored everything: the shard files can go
        if shard is not None:
            shard.unlink(missing_ok=True)
        return result
    finally:
        if db is not None:
            db.close()
        state.destroy_process_group()


def _prepare(workspace: Workspace, db, resolve: Callable[[], Resolved], resume_run: int | None,
             seed: int = 0) -> dict:
    """Rank 0: the request, the checked samples, the run (created or reopened) and the samples it already has
    (shard files an earlier launch left on this machine are stored first)."""
    request, model_path, adapter_path, coords = resolve()
    samples = load_eval_samples(workspace, request)
    if resume_run is not None:
        reopen_run(db, resume_run)
        run_id = resume_run
        _import_shards(workspace, db, run_id)
    else:
        from ivt_core.grounders.transformers_grounder import describe_model

        name, family = describe_model(model_path, adapter_path, coords)
        run_id = start_run(db, name, family, model_path, request, adapter_path)
    return {"run_id": run_id, "request": request, "samples": samples, "done": sorted(done_sample_ids(db, run_id)),
            "model_path": str(model_path), "adapter_path": adapter_path, "coords": coords, "seed": seed}


def _run_share(workspace: Workspace, db, run_id: int, request: EvalRequest, plan: dict, mine: list, shard,
               device: str, load_in_4bit: bool, state, progress) -> None:
    import torch

    from ivt_core.data.sample import load_image
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import run_loop

    where = "cpu" if device == "cpu" else str(state.device)
    if request.loop.sampling.do_sample:  # each rank its own stream of samples, reproducible for a given seed
        torch.manual_seed(plan["seed"] + state.process_index)
    grounder = TransformersGrounder.load(plan["model_path"], plan["adapter_path"], load_in_4bit, where,
                                         plan["coords"])
    if shard is not None:
        shard.parent.mkdir(parents=True, exist_ok=True)
    with marks_run_end(db, run_id) if db is not None else nullcontext():  # rank 0 alone writes the store
        for group in run_loop(grounder, mine, request.loop, lambda s: load_image(workspace.resolve(s.image_path))):
            if shard is None:
                add_trajectories(db, run_id, group)
            else:
                _append_shard(shard, group)
            if progress:
                progress(len(group))


def _merge(workspace: Workspace, db, run_id: int, samples: list, gathered: list[dict]) -> EvalResult:
    """Rank 0: store the other ranks' trajectories (each sample once), check the run is whole, finish it."""
    stored = done_sample_ids(db, run_id)
    new: dict[str, Trajectory] = {}
    for data in gathered:
        if data["sample_id"] not in stored:
            new.setdefault(data["sample_id"], trajectory_from_dict(data))
    add_trajectories(db, run_id, list(new.values()))
    metrics = run_metrics(load_trajectories(db, run_id))
    if metrics["n"] != len(samples):
        message = (f"the ranks stored {metrics['n']} of {len(samples)} samples; resume with "
                   f"`ivt eval --resume-run {run_id} --gpus N`")
        set_run_status(db, run_id, "failed", message)
        raise LaunchFailed(message)
    finish_run(db, run_id, metrics)
    shutil.rmtree(shard_dir(workspace, run_id), ignore_errors=True)
    return EvalResult(run_id, metrics)


def _import_shards(workspace: Workspace, db, run_id: int) -> None:
    """Store the trajectories of shard files an earlier launch left (those this machine can see), then remove
    the files: a resumed run does not redo what a rank finished before it stopped."""
    stored = done_sample_ids(db, run_id)
    for path in sorted(shard_dir(workspace, run_id).glob("rank*.jsonl")):
        fresh = [t for t in _read_shard(path) if t.sample_id not in stored]
        add_trajectories(db, run_id, fresh)
        stored |= {t.sample_id for t in fresh}
        path.unlink()


def _append_shard(path: Path, trajectories: list[Trajectory]) -> None:
    with path.open("a") as sink:
        for trajectory in trajectories:
            sink.write(json.dumps(trajectory_to_dict(trajectory)) + "\n")
        sink.flush()
        os.fsync(sink.fileno())


def _read_shard(path: Path | None) -> list[Trajectory]:
    """The trajectories of a shard file; a last line cut by a crash is dropped (its sample runs again)."""
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(trajectory_from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return out
