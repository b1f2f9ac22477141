"""Background jobs: long work runs as a subprocess whose state lives in SQLite.

- ``submit`` starts ``python -m ivt_core.cli <command> ... --job-id N`` in its own process group, from an
  argument list (never a shell), with its output in ``jobs/N.log`` inside the workspace. Only commands listed in
  ``JOB_COMMANDS`` can run as jobs, and their arguments are parsed by the real CLI parser before anything
  starts, so a job can never be an arbitrary command.
- The child reports through ``JobReporter``: running + pid, a heartbeat every few seconds, progress, metrics, and
  the end state. SIGTERM (``cancel``) becomes ``JobCancelled`` in the child, which stops after the batch in
  flight, keeps what it wrote and marks itself cancelled.
- ``reconcile`` (run when the app or the CLI starts) marks jobs and runs whose process is gone as interrupted.
- ``resume`` starts a new job that continues the old one's run (evaluation) from what was stored.
- ``submit(..., after=N)`` queues a job behind job N: it starts when N is done (``start_ready``, called by a job
  as it ends, by ``reconcile`` and by the app's timer) and is cancelled, never started, if N fails or is
  cancelled (``needs_success=False``: it starts however N ends). ``synth --run-of-job N`` names the run that
  evaluation job N writes, before it exists. ``submit_in_turn`` queues a job that loads a model behind the newest
  such job still queued or running, so jobs started from two browser tabs take turns on one GPU.

Closing the browser or the terminal loses nothing: the job goes on, and its state is in the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from ivt_core.errors import InvalidInputError
from ivt_core.store import ThreadConnections
from ivt_core.store.jobs import ACTIVE, FINAL, add_metric, create_job, get_job, update_job
from ivt_core.store.runs import run_of_job
from ivt_core.store.samples import now
from ivt_core.workspace import Workspace

# kind -> what follows `python` on the command line. Only these can run as jobs.
JOB_COMMANDS = {
    "eval": ["-m", "ivt_core.cli", "eval"],
    "synth": ["-m", "ivt_core.cli", "synth"],
    "sft": ["-m", "training.sft"],
    "grpo": ["-m", "training.grpo"],
}
TRAINERS = ("sft", "grpo")
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
ROOT = Path(__file__).resolve().parent.parent


class JobCancelled(Exception):
    """Raised in a job's main thread when it receives SIGTERM."""


def _validate(kind: str, args: list[str], workspace: Workspace | None = None) -> list[str]:
    """Parse ``args`` exactly as the job's program will, before anything starts. Returns the stored argv."""
    if kind not in JOB_COMMANDS:
        raise InvalidInputError(f"unknown job kind {kind!r}; jobs can be: {', '.join(JOB_COMMANDS)}")
    if any(not isinstance(a, str) for a in args):
        raise InvalidInputError("job arguments must be strings")
    banned = {"--workspace", "--job-id", "--job"} & set(args)
    if banned:
        raise InvalidInputError(f"job arguments may not set {', '.join(sorted(banned))}")
    if kind in TRAINERS:
        import importlib

        # the trainers' own config parser and checks (the CLI front door may reach training; the engine never)
        module = importlib.import_module(f"training.{kind}")
        try:
            cfg = module.config_from_args([*args, "--workspace", str(workspace.root)] if workspace else args)
            module.preflight(cfg)
        except SystemExit as exc:
            raise InvalidInputError(f"invalid {kind} arguments: {' '.join(args)}") from exc
        return list(args)
    from ivt_core.cli import build_parser

    try:
        build_parser().parse_args([*JOB_COMMANDS[kind][2:], *args])
    except SystemExit as exc:
        raise InvalidInputError(f"invalid {kind} job arguments: {' '.join(args)}") from exc
    return list(args)


def submit(workspace: Workspace, kind: str, args: list[str], resumed_from: int | None = None,
           after: int | None = None, needs_success: bool = True) -> int:
    """Start a background job (or queue it behind job ``after``); return its id. Raises InvalidInputError for
    arguments the CLI would reject, or NotFoundError for an unknown ``after``."""
    argv = _validate(kind, args, workspace)
    logs = workspace.root / "jobs"
    logs.mkdir(exist_ok=True)
    db = workspace.connect()
    try:
        waits = get_job(db, after) if after is not None else None
        job_id = create_job(db, kind, argv, "", resumed_from, waits_for=after, needs_success=needs_success)
        log_path = logs / f"{job_id}.log"
        update_job(db, job_id, log_path=str(log_path))
        if kind in TRAINERS and "--out" not in argv:
            argv = [*argv, "--out", str(workspace.root / "models" / f"{kind}-job{job_id}")]
            update_job(db, job_id, argv=json.dumps(argv))
        if waits is not None and waits["status"] != "done":
            update_job(db, job_id, message=f"waits for job {after}")
            if waits["status"] in FINAL:  # it has ended already: start or cancel this one now
                start_ready(workspace)
            return job_id
        _launch(workspace, db, job_id, kind, argv)
        return job_id
    finally:
        db.close()


MODEL_JOBS = ("eval", "sft", "grpo")  # the kinds that load a model (synthesis from the app uses no model)


def submit_in_turn(workspace: Workspace, kind: str, args: list[str]) -> tuple[int, int | None]:
    """Submit a job; one that loads a model waits for the newest model-loading job still queued or running
    (and starts however that one ends). Returns (job id, the job it waits for or None)."""
    ahead = None
    if kind in MODEL_JOBS:
        db = workspace.connect()
        try:
            marks = ", ".join("?" * len(MODEL_JOBS))
            rows = list(db.query(f"SELECT id FROM jobs WHERE kind IN ({marks}) AND status IN ('queued', 'running') "
                                 "ORDER BY id DESC LIMIT 1", list(MODEL_JOBS)))
        finally:
            db.close()
        ahead = rows[0]["id"] if rows else None
    return submit(workspace, kind, args, after=ahead, needs_success=False), ahead


def _launch(workspace: Workspace, db, job_id: int, kind: str, argv: list[str]) -> None:
    command = job_command(workspace, kind, argv, job_id)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(workspace.root / "jobs" / f"{job_id}.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=ROOT, env=env, start_new_session=True)
    update_job(db, job_id, pid=process.pid, message="")


def start_ready(workspace: Workspace, db: Database | None = None) -> list[int]:
    """Start the queued jobs whose awaited job is done; cancel those whose awaited job ended otherwise.
    Returns the ids started. Safe to call often and from several processes (a job starts once). ``db``: a
    connection to use (the app's timer passes its own), else one is opened for the call."""
    own = db is None
    db = workspace.connect() if own else db
    started = []
    try:
        waiting = list(db.query(
            "SELECT j.id, j.kind, j.argv, j.needs_success, w.status AS awaited, w.id AS awaited_id FROM jobs j "
            "JOIN jobs w ON w.id = j.waits_for WHERE j.status = 'queued' AND j.pid IS NULL"))
        for job in waiting:
            if job["awaited"] == "done" or (job["awaited"] in FINAL and not job["needs_success"]):
                claimed = db.execute("UPDATE jobs SET pid = -1 WHERE id = ? AND pid IS NULL", [job["id"]]).rowcount
                if claimed:  # another process may have claimed it a moment earlier
                    _launch(workspace, db, job["id"], job["kind"], json.loads(job["argv"]))
                    started.append(job["id"])
            elif job["awaited"] in FINAL:
                update_job(db, job["id"], status="cancelled", finished_at=now(),
                           message=f"not started: job {job['awaited_id']} ended {job['awaited']}")
        return started
    finally:
        if own:
            db.close()


def job_command(workspace: Workspace, kind: str, argv: list[str], job_id: int | str) -> list[str]:
    """The exact argument list a job runs (``submit`` adds ``--out`` for trainers before calling this)."""
    program = JOB_COMMANDS[kind]
    gpus = int(argv[argv.index("--gpus") + 1]) if kind in TRAINERS and "--gpus" in argv else 1
    if gpus > 1:  # data parallel over N GPUs: the same trainer under accelerate launch
        program = ["-m", "accelerate.commands.launch", "--num_processes", str(gpus), *program]
    return [sys.executable, *program, *argv, "--workspace", str(workspace.root), "--job-id", str(job_id)]


def eval_job_args(model: dict, dataset: str, split: str, steps: int, stop: str = "fixed",
                  limit: int | None = None) -> list[str]:
    """Arguments of an evaluation job for a registered model (its registry row). Raises InvalidInputError."""
    if not 0 <= int(steps) <= 10:
        raise InvalidInputError(f"T (refinement steps) must be 0..10, got {steps}")
    if limit is not None and int(limit) < 1:
        raise InvalidInputError(f"the sample limit must be at least 1, got {limit}")
    args = ["--model", model["base_path"], "--dataset", dataset, "--split", split, "--steps", str(int(steps)),
            "--stop", stop]
    if model.get("adapter_path"):
        args += ["--adapter", model["adapter_path"]]
    return args + (["--limit", str(int(limit))] if limit else [])


def log_tail(job: dict, lines: int = 40) -> str:
    """The last ``lines`` lines of a job's log (progress-bar redraws collapsed to their latest state)."""
    path = Path(job["log_path"]) if job.get("log_path") else None
    if path is None or not path.is_file():
        return "(no log yet)"
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(shown[-lines:])


def _alive(pid: int | None) -> bool:
    if not pid or pid < 0:  # none yet, or -1: claimed by start_ready a moment before its process starts
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child of this process stays a zombie until reaped; it is not alive
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def cancel(workspace: Workspace, job_id: int) -> str:
    """Ask a job to stop (SIGTERM to its process group); return the status it has now."""
    db = workspace.connect()
    try:
        job = get_job(db, job_id)
        if job["status"] not in ACTIVE:
            return job["status"]
        if _alive(job["pid"]):
            try:
                os.killpg(job["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
            if job["status"] == "running":
                return "cancelling"  # the job stops after the batch in flight and marks itself cancelled
            # started a moment ago and not reporting yet: SIGTERM ends it before it can say so itself
        update_job(db, job_id, status="cancelled", finished_at=now(), message="cancelled before it ran")
        return "cancelled"
    finally:
        db.close()


def reconcile(workspace: Workspace) -> list[int]:
    """Mark jobs (and runs) whose process is gone or silent as interrupted; return the job ids marked."""
    db = workspace.connect()
    try:
        marked = []
        stale = (datetime.now(UTC) - timedelta(seconds=STALE_AFTER_S)).isoformat(timespec="seconds")
        for job in db.query("SELECT id, pid, status, heartbeat_at, created_at FROM jobs WHERE status IN (?, ?) "
                            "AND NOT (status = 'queued' AND waits_for IS NOT NULL AND pid IS NULL)", list(ACTIVE)):
            silent = (job["heartbeat_at"] or job["created_at"]) < stale
            if not _alive(job["pid"]) or (silent and job["status"] == "running"):
                update_job(db, job["id"], status="interrupted", finished_at=now(),
                           message="the job's process ended without reporting; resume it")
                marked.append(job["id"])
        for run in db.query("SELECT id, pid, job_id FROM runs WHERE status = 'running'"):
            if not _alive(run["pid"]):
                db.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", [run["id"]])
    finally:
        db.close()
    start_ready(workspace)  # jobs waiting on one that ended while nobody watched
    return marked


def resume(workspace: Workspace, job_id: int) -> int:
    """Start a job that continues an interrupted, cancelled or failed one; return the new job's id."""
    db = workspace.connect()
    try:
        job = get_job(db, job_id)
        run_id = run_of_job(db, job_id)
    finally:
        db.close()
    if job["status"] in ACTIVE:
        raise InvalidInputError(f"job {job_id} is still {job['status']}; cancel it first or wait for it")
    if job["status"] == "done":
        raise InvalidInputError(f"job {job_id} finished; nothing to resume")
    args = list(job["argv"])
    if run_id is not None:
        args = without_options(args, valued=("--resume-run",)) + ["--resume-run", str(run_id)]
    return submit(workspace, job["kind"], args, resumed_from=job_id)


def without_options(args: list[str], flags: tuple[str, ...] = (), valued: tuple[str, ...] = ()) -> list[str]:
    """``args`` less the switches in ``flags`` and the options in ``valued`` with their values."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags or any(arg.startswith(f"{name}=") for name in valued):
            continue
        elif arg in valued:
            skip = True
        else:
            out.append(arg)
    return out


def option_value(args: list[str], name: str) -> str | None:
    """The value of ``name`` in ``args`` (``--o v`` or ``--o=v``), or None."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def job_arguments(args: list[str]) -> list[str]:
    """What a command line hands to its job: all but ``--job`` and ``--workspace`` (the runner sets that)."""
    return without_options(args, flags=("--job",), valued=("--workspace",))


class JobReporter:
    """Used inside a job's process: heartbeat, progress, metrics, end state. A no-op when ``job_id`` is None.

    Progress and metrics come from the main thread and the heartbeat from its own thread; each keeps one
    connection (``ThreadConnections``) instead of opening one per report.
    """

    def __init__(self, workspace: Workspace, job_id: int | None):
        self.workspace = workspace
        self.job_id = job_id
        self._connections = ThreadConnections(workspace.db_path)
        self._stop = threading.Event()

    def __enter__(self) -> JobReporter:
        if self.job_id is None:
            return self
        update_job(self._connections.get(), self.job_id, status="running", pid=os.getpid(), started_at=now(),
                   heartbeat_at=now())
        signal.signal(signal.SIGTERM, self._on_sigterm)
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _on_sigterm(self, signum, frame):
        raise JobCancelled()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            update_job(self._connections.get(), self.job_id, heartbeat_at=now())

    def progress(self, done: int, total: int, message: str = "") -> None:
        if self.job_id is not None:
            update_job(self._connections.get(), self.job_id, progress_done=done, progress_total=total,
                       message=message, heartbeat_at=now())

    def metric(self, step: int, name: str, value: float) -> None:
        if self.job_id is not None:
            add_metric(self._connections.get(), self.job_id, step, name, value)

    def link_run(self, run_id: int) -> None:
        if self.job_id is not None:
            self._connections.get().execute("UPDATE runs SET job_id = ? WHERE id = ?", [self.job_id, run_id])

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.job_id is None:
            return False
        self._stop.set()
        if exc_type is None:
            status, error = "done", None
        elif issubclass(exc_type, (JobCancelled, KeyboardInterrupt)):
            status, error = "cancelled", None
        else:
            status, error = "failed", f"{exc_type.__name__}: {exc}"
        update_job(self._connections.get(), self.job_id, status=status, finished_at=now(), error=error,
                   heartbeat_at=now())
        try:
            start_ready(self.workspace)  # the jobs queued behind this one
        except Exception as start_error:  # noqa: BLE001 - this job's own end state is already written
            print(f"could not start the jobs waiting for job {self.job_id}: {start_error}", file=sys.stderr)
        return False
