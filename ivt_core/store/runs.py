"""Evaluation runs, their trajectories and steps."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlite_utils import Database

from ivt_core.boxes import Box
from ivt_core.errors import NotFoundError
from ivt_core.metrics import outcome
from ivt_core.records import StepRecord, Trajectory
from ivt_core.store.db import write_transaction
from ivt_core.store.samples import now


def create_run(
    db: Database,
    model_id: int,
    dataset: str,
    split: str,
    steps: int,
    policy: str,
    prompt_family: str,
    prompt_version: str,
    render_style: dict,
    config: dict,
    pid: int | None = None,
    job_id: int | None = None,
) -> int:
    """Insert a run in status ``running``; return its id."""
    cursor = db.execute(
        "INSERT INTO runs (model_id, dataset, split, steps, policy, prompt_family, prompt_version, render_style, "
        "status, created_at, config, pid, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
        [model_id, dataset, split, steps, policy, prompt_family, prompt_version, json.dumps(render_style), now(),
         json.dumps(config), pid, job_id],
    )
    return cursor.lastrowid


def set_run_status(db: Database, run_id: int, status: str, error: str | None = None, **fields) -> None:
    """Set a run's status (and error / other columns)."""
    columns = {"status": status, "error": error, **fields}
    db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?", [*columns.values(), run_id])


def done_sample_ids(db: Database, run_id: int) -> set[str]:
    """Samples that already have a stored trajectory in the run (skipped when it resumes)."""
    return {r["sample_id"] for r in db.query("SELECT sample_id FROM trajectories WHERE run_id = ?", [run_id])}


def add_trajectories(db: Database, run_id: int, trajectories: Iterable[Trajectory]) -> int:
    """Write trajectories with all their steps in one transaction; returns how many were written."""
    count = 0
    with write_transaction(db):
        for traj in trajectories:
            cursor = db.execute(
                "INSERT INTO trajectories (run_id, sample_id, stop_step, step0_iou, final_iou, oracle_iou, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, traj.sample_id, traj.stop_step, traj.step0_iou, traj.final_iou, traj.oracle_iou,
                 outcome(traj)],
            )
            traj_id = cursor.lastrowid
            db.conn.executemany(
                "INSERT INTO steps (trajectory_id, step, raw_text, reasoning, x1, y1, x2, y2, iou, parse_ok, "
                "parse_failure, says_correct, tokens_in, tokens_out, latency_ms, own_text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [traj_id, s.index, s.raw_text, s.reasoning,
                     *(s.box.to_xyxy() if s.box else [None] * 4), s.iou, int(s.parse_ok), s.parse_failure,
                     int(s.says_correct), s.tokens_in, s.tokens_out, s.latency_ms, s.own_text]
                    for s in traj.steps
                ],
            )
            count += 1
        db.execute("UPDATE runs SET n_samples = n_samples + ? WHERE id = ?", [count, run_id])
    return count


def finish_run(db: Database, run_id: int, metrics: dict) -> None:
    db.execute(
        "UPDATE runs SET status = 'done', finished_at = ?, metrics = ? WHERE id = ?",
        [now(), json.dumps(metrics), run_id],
    )


def delete_run(db: Database, run_id: int) -> None:
    """Remove a run with its trajectories and steps (used to roll back a run that failed half-way)."""
    with write_transaction(db):
        db.execute("DELETE FROM runs WHERE id = ?", [run_id])


def _decode_run(row: dict) -> dict:
    out = dict(row)
    for key in ("render_style", "config", "metrics"):
        out[key] = json.loads(row[key]) if row[key] else None
    return out


def run_verdict(run: dict) -> str:
    """A stored run's refinement verdicts: "own" (the model's), or "derived" (``ivt eval --verdict derived``)."""
    return (run.get("config") or {}).get("verdict", "own")


def run_loop_text(run: dict) -> str:
    """How a stored run iterated, as the run lists show it: "T=2 fixed", with ", derived verdict" for a run made
    with ``--verdict derived`` (its verdicts are not the model's own words)."""
    return f"T={run['steps']} {run['policy']}" + (", derived verdict" if run_verdict(run) == "derived" else "")


def get_run(db: Database, run_id: int) -> dict:
    rows = list(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    if not rows:
        raise NotFoundError(f"no run with id {run_id}; `ivt runs` lists the runs of a workspace")
    return _decode_run(rows[0])


def run_of_job(db: Database, job_id: int) -> int | None:
    """The run an evaluation job wrote (its newest), or None."""
    rows = list(db.query("SELECT id FROM runs WHERE job_id = ? ORDER BY id DESC LIMIT 1", [job_id]))
    return rows[0]["id"] if rows else None


def run_samples_meta(db: Database, run_id: int) -> dict[str, dict]:
    """{sample id: {"source", "meta", "bbox"}} of the samples a run has trajectories for."""
    rows = db.query(
        "SELECT s.id, s.source, s.meta, s.x1, s.y1, s.x2, s.y2 FROM samples s JOIN trajectories t "
        "ON t.sample_id = s.id WHERE t.run_id = ?", [run_id],
    )
    return {r["id"]: {"source": r["source"], "meta": json.loads(r["meta"]),
                      "bbox": Box(r["x1"], r["y1"], r["x2"], r["y2"])} for r in rows}


def count_trajectories(db: Database, run_id: int) -> int:
    """How many trajectories a run has stored."""
    return db.execute("SELECT COUNT(*) FROM trajectories WHERE run_id = ?", [run_id]).fetchone()[0]


def link_run_to_job(db: Database, run_id: int, job_id: int) -> None:
    """Record that job ``job_id`` writes run ``run_id`` now (a resumed run moves to the resuming job)."""
    db.execute("UPDATE runs SET job_id = ? WHERE id = ?", [job_id, run_id])


def running_runs(db: Database) -> list[dict]:
    """Runs marked running: id, pid of their writer, job id."""
    return list(db.query("SELECT id, pid, job_id FROM runs WHERE status = 'running'"))


def list_runs(db: Database) -> list[dict]:
    return [_decode_run(r) for r in db.query("SELECT * FROM runs ORDER BY id DESC")]


def load_trajectories(db: Database, run_id: int) -> list[Trajectory]:
    """All trajectories of a run with their steps, in sample order."""
    trajs: dict[int, Trajectory] = {}
    for row in db.query(
        "SELECT id, sample_id, stop_step FROM trajectories WHERE run_id = ? ORDER BY sample_id", [run_id]
    ):
        trajs[row["id"]] = Trajectory(row["sample_id"], [], row["stop_step"])
    for row in db.query(
        "SELECT s.* FROM steps s JOIN trajectories t ON s.trajectory_id = t.id WHERE t.run_id = ? "
        "ORDER BY s.trajectory_id, s.step",
        [run_id],
    ):
        box = Box(row["x1"], row["y1"], row["x2"], row["y2"]) if row["x1"] is not None else None
        trajs[row["trajectory_id"]].steps.append(StepRecord(
            index=row["step"], raw_text=row["raw_text"], reasoning=row["reasoning"], box=box, iou=row["iou"],
            parse_ok=bool(row["parse_ok"]), parse_failure=row["parse_failure"],
            says_correct=bool(row["says_correct"]), tokens_in=row["tokens_in"], tokens_out=row["tokens_out"],
            latency_ms=row["latency_ms"], own_text=row["own_text"],
        ))
    return list(trajs.values())
