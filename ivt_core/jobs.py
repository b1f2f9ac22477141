"""Background jobs: long work runs as a subprocess whose state lives in SQLite.

- ``submit(workspace, kind, config)`` takes a checked config (``ivt_core.config``: ``EvalConfig``,
  ``SynthConfig``, ``SFTConfig``, ``GRPOConfig``), stores it as JSON in the job row and starts
  ``python -m <program> --workspace W --job-id N`` in its own process group, from an argument list (never a
  shell), with its output in ``jobs/N.log`` inside the workspace. The program reads its settings from the row.
  Only the kinds in ``JOB_PROGRAMS`` can run, and a config is checked (``preflight``) before anything starts,
  so a job can never be an arbitrary command. The row's ``argv`` is the equivalent command line, for people.
- The child reports through ``JobReporter``: running + pid, a heartbeat every few seconds, progress, metrics, and
  the end state. SIGTERM (``cancel``) becomes ``JobCancelled`` in the child, which stops after the batch in
  flight, keeps what it wrote and marks itself cancelled.
- ``reconcile`` (run when the app or the CLI starts) marks jobs and runs whose process is gone as interrupted.
- ``resume`` submits the stored config again: an evaluation continues the old job's run, a trainer its
  checkpoint (the same output folder).
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
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from ivt_core import logs
from ivt_core.config import job_config_class
from ivt_core.config.flags import config_to_argv, parse_config
from ivt_core.config.settings import absolute_paths, from_stored, stored
from ivt_core.errors import InvalidInputError, JobCancelled
from ivt_core.store import ThreadConnections
from ivt_core.store.jobs import (
    ACTIVE,
    FINAL,
    add_metric,
    claim_job,
    create_job,
    get_job,
    newest_active_job,
    resumed_by,
    unfinished_jobs,
    update_job,
    waiting_jobs,
)
from ivt_core.store.runs import link_run_to_job, run_of_job, running_runs, set_run_status
from ivt_core.store.samples import now
from ivt_core.workspace import Workspace

# kind -> the program a job runs (``python -m ...``) and the command a person would type for the same work.
# The trainers are named, never imported: ``ivt_core`` does not depend on ``training``.
JOB_PROGRAMS = {
    "eval": ["-m", "ivt_core.cli", "eval"],
    "synth": ["-m", "ivt_core.cli", "synth"],
    "sft": ["-m", "training.sft"],
    "grpo": ["-m", "training.grpo"],
}
COMMANDS = {"eval": ["ivt", "eval"], "synth": ["ivt", "synth"], "sft": ["ivt", "train", "sft"],
            "grpo": ["ivt", "train", "grpo"]}
TRAINERS = ("sft", "grpo")
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
ROOT = Path(__file__).resolve().parent.parent
log = logs.get(__name__)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def checked_config(workspace: Workspace, kind: str, config):
    """A copy of ``config`` checked for a ``kind`` job in ``workspace`` (``preflight``). Raises InvalidInputError
    (or NotFoundError) saying what to fix."""
    cls = job_config_class(kind)
    if not isinstance(config, cls):
        raise InvalidInputError(f"a {kind} job takes a {cls.__name__}, not {type(config).__name__}")
    config = absolute_paths(config)  # the job runs elsewhere (the repository): paths mean what the user meant
    if kind in TRAINERS:
        config.workspace, config.job_id = str(workspace.root), 0
    config.preflight(workspace)
    return config


def command_flags(config) -> list[str]:
    """The flags that give ``config`` on the command line (the workspace aside: the job's is given by the runner)."""
    return _without_workspace(config_to_argv(config))


def shown_command(kind: str, config) -> list[str]:
    """The command a person would type for the same work (``ivt eval --steps 1 ...``)."""
    return [*COMMANDS[kind], *command_flags(config)]


def submit(workspace: Workspace, kind: str, config, resumed_from: int | None = None, after: int | None = None,
           needs_success: bool = True) -> int:
    """Start a background job (or queue it behind job ``after``) doing what ``config`` says; return its id.
    Raises InvalidInputError for settings the program would refuse, NotFoundError for an unknown ``after``."""
    config = checked_config(workspace, kind, config)
    logs = workspace.root / "jobs"
    logs.mkdir(exist_ok=True)
    with workspace.connect() as db:
        waits = get_job(db, after) if after is not None else None
        job_id = create_job(db, kind, [], "", resumed_from, waits_for=after, needs_success=needs_success,
                            config=stored(config))
        if kind in TRAINERS and not config.out:  # the trainer's own default for a job, written down
            config.out = str(workspace.root / "models" / f"{kind}-job{job_id}")
        update_job(db, job_id, log_path=str(logs / f"{job_id}.log"), config=stored(config),
                   argv=command_flags(config))
        if waits is not None and waits["status"] != "done":
            update_job(db, job_id, message=f"waits for job {after}")
            if waits["status"] in FINAL:  # it has ended already: start or cancel this one now
                start_ready(workspace)
            return job_id
        _launch(workspace, db, job_id, kind, getattr(config, "gpus", 1))
        return job_id


def _without_workspace(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workspace":
            skip = True
        else:
            out.append(arg)
    return out


def job_config(workspace: Workspace, job: dict):
    """The settings a job was started with, as its config class. Jobs made before configs were stored have
    only their argument list: it is parsed with the same flags."""
    cls = job_config_class(job["kind"])
    if job.get("config") is not None:
        return from_stored(cls, job["config"])
    argv = _without_workspace(job["argv"])
    config = parse_config(cls, argv, f"job {job['id']}")
    if job["kind"] in TRAINERS:
        config.workspace = str(workspace.root)
    return config


def stored_config(workspace: Workspace, job_id: int) -> dict:
    """The stored settings of job ``job_id`` as a dict (what a job's program starts from)."""
    with workspace.connect() as db:
        job = get_job(db, job_id)
    return stored(job_config(workspace, job))


MODEL_JOBS = ("eval", "sft", "grpo")  # the kinds that load a model (synthesis from the app uses no model)


def submit_in_turn(workspace: Workspace, kind: str, config) -> tuple[int, int | None]:
    """Submit a job; one that loads a model waits for the newest model-loading job still queued or running
    (and starts however that one ends). Returns (job id, the job it waits for or None)."""
    ahead = None
    if kind in MODEL_JOBS:
        with workspace.connect() as db:
            ahead = newest_active_job(db, MODEL_JOBS)
    return submit(workspace, kind, config, after=ahead, needs_success=False), ahead


def _launch(workspace: Workspace, db, job_id: int, kind: str, gpus: int = 1) -> None:
    command = job_command(workspace, kind, job_id, gpus)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(workspace.root / "jobs" / f"{job_id}.log", "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=ROOT, env=env, start_new_session=True)
    update_job(db, job_id, pid=process.pid, message="")
    log.info("started %s job %s (pid %s): %s", kind, job_id, process.pid, " ".join(command))


def start_ready(workspace: Workspace, db: Database | None = None) -> list[int]:
    """Start the queued jobs whose awaited job is done; cancel those whose awaited job ended otherwise.
    Returns the ids started. Safe to call often and from several processes (a job starts once). ``db``: a
    connection to use (the app's timer passes its own), else one is opened for the call."""
    own = db is None
    db = workspace.connect() if own else db
    started = []
    try:
        for job in waiting_jobs(db):
            if job["awaited"] == "done" or (job["awaited"] in FINAL and not job["needs_success"]):
                if claim_job(db, job["id"]):  # another process may have claimed it a moment earlier
                    gpus = json.loads(job["config"] or "{}").get("gpus", 1)
                    _launch(workspace, db, job["id"], job["kind"], gpus)
                    started.append(job["id"])
            elif job["awaited"] in FINAL:
                update_job(db, job["id"], status="cancelled", finished_at=now(),
                           message=f"not started: job {job['awaited_id']} ended {job['awaited']}")
        return started
    finally:
        if own:
            db.close()


def job_command(workspace: Workspace, kind: str, job_id: int | str, gpus: int = 1) -> list[str]:
    """The exact argument list a job's process runs: the program reads the job's settings from its row."""
    program = JOB_PROGRAMS[kind]
    if kind in TRAINERS and gpus > 1:  # data parallel over N GPUs: the same trainer under accelerate launch
        program = ["-m", "accelerate.commands.launch", "--num_processes", str(gpus), *program]
    return [sys.executable, *program, "--workspace", str(workspace.root), "--job-id", str(job_id)]


def log_tail(job: dict, lines: int = 40) -> str:
    """The last ``lines`` lines of a job's log (progress-bar redraws collapsed to their latest state)."""
    path = Path(job["log_path"]) if job.get("log_path") else None
    if path is None or not path.is_file():
        return "(no log yet)"
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    text = ANSI_ESCAPE.sub("", text)  # colours and cursor moves of progress bars: noise outside a terminal
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


def _ending(pid: int | None, wait_s: float = 10.0) -> bool:
    """Whether process ``pid`` is still alive after waiting up to ``wait_s`` for it to end (a job that has
    written its end state takes a moment to exit)."""
    deadline = time.monotonic() + wait_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)
    return False


def _ours(pid: int) -> bool:
    """Whether process ``pid`` runs one of the job programs (a pid reused by another program after a reboot is
    not our job). True where the command line cannot be read."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return any(program[1] in command for program in JOB_PROGRAMS.values())


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
    with workspace.connect() as db:
        marked = []
        stale = (datetime.now(UTC) - timedelta(seconds=STALE_AFTER_S)).isoformat(timespec="seconds")
        for job in unfinished_jobs(db):
            silent = (job["heartbeat_at"] or job["created_at"]) < stale
            if not _alive(job["pid"]):
                update_job(db, job["id"], status="interrupted", finished_at=now(),
                           message="the job's process ended without reporting; resume it")
                marked.append(job["id"])
            elif silent and job["status"] == "running":  # alive but silent (stopped, swapped out): never resumed
                update_job(db, job["id"], message=f"stalled: no heartbeat since {job['heartbeat_at']} (its "
                                                   f"process {job['pid']} is alive; cancel it to stop it)")
        for run in running_runs(db):
            if not _alive(run["pid"]):
                set_run_status(db, run["id"], "interrupted")
    start_ready(workspace)  # jobs waiting on one that ended while nobody watched
    return marked


def whole_chain(db, job_id: int) -> list[int]:
    """Every job of ``job_id``'s resume chain, from the first job to the newest resume, oldest first."""
    first = job_id
    while (job := get_job(db, first))["resumed_from"] is not None:
        first = job["resumed_from"]
    return resume_chain(db, first)


def resume_chain(db, job_id: int) -> list[int]:
    """``job_id`` and the jobs that resumed it, and those that resumed them, oldest first."""
    chain = [job_id]
    while True:
        nxt = resumed_by(db, chain[-1])
        if nxt is None:
            return chain
        chain.append(nxt)


def resume_refusal(db, job_id: int) -> str | None:
    """None if ``resume`` can continue the job, else why not (the app shows its Resume button only then)."""
    job = get_job(db, job_id)
    later = [get_job(db, j) for j in resume_chain(db, job_id)[1:]]
    if job["status"] in ACTIVE:
        return f"job {job_id} is still {job['status']}; cancel it first or wait for it"
    if job["status"] == "done":
        return f"job {job_id} finished; nothing to resume"
    going = next((j for j in later if j["status"] in ACTIVE or j["status"] == "done"), None)
    if going is not None:
        return (f"job {job_id} was resumed as job {going['id']}, which is {going['status']}; "
                f"{'follow' if going['status'] != 'done' else 'use'} that one")
    if _ending(job["pid"]) and _ours(job["pid"]):
        return (f"job {job_id}'s process {job['pid']} is still alive (stopped or stalled); end it before resuming, "
                "or two writers would share its run")
    return None


def resume(workspace: Workspace, job_id: int) -> int:
    """Start a job that continues an interrupted, cancelled or failed one with its stored settings (an
    evaluation continues its run, a trainer its checkpoint); return the new job's id."""
    with workspace.connect() as db:
        refusal = resume_refusal(db, job_id)
        if refusal:
            raise InvalidInputError(refusal)
        job = get_job(db, job_id)
        chain = resume_chain(db, job_id)
        run_id = next((r for r in (run_of_job(db, j) for j in reversed(chain)) if r is not None), None)
    config = job_config(workspace, job)
    if job["kind"] == "eval" and run_id is not None:
        config.resume_run = run_id
    if job["kind"] in TRAINERS and not config.out:  # where the old job wrote its checkpoints
        config.out = str(workspace.root / "models" / f"{job['kind']}-job{job_id}")
    return submit(workspace, job["kind"], config, resumed_from=job_id)


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
            link_run_to_job(self._connections.get(), run_id, self.job_id)

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
            log.warning("could not start the jobs waiting for job %s: %s", self.job_id, start_error)
        return False
