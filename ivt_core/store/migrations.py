"""Schema migrations: sqlite-utils' ``Migrations`` runs them in order, each in its own transaction, recorded in
``_sqlite_migrations`` (set ``ivt``).

Add a schema change by appending a ``(name, sql)`` pair; never edit one that has shipped. Workspaces made before
the switch to sqlite-utils' runner recorded their migrations in ``_migrations``; ``migrate`` adopts those records
once, so an existing workspace upgrades in place.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

from ivt_core import logs

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_core",
        """
        CREATE TABLE datasets (
            name TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            created_at TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE samples (
            id TEXT PRIMARY KEY,
            dataset TEXT NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
            split TEXT NOT NULL,
            image_path TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            expression TEXT NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            meta TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX samples_dataset_split ON samples(dataset, split, id);
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            base_path TEXT NOT NULL,
            adapter_path TEXT NOT NULL DEFAULT '',
            family TEXT NOT NULL,
            parent_id INTEGER REFERENCES models(id),
            origin_job INTEGER,
            created_at TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            UNIQUE (base_path, adapter_path)
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            dataset TEXT NOT NULL REFERENCES datasets(name),
            split TEXT NOT NULL,
            steps INTEGER NOT NULL,
            policy TEXT NOT NULL,
            prompt_family TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            render_style TEXT NOT NULL,
            status TEXT NOT NULL,
            n_samples INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            metrics TEXT,
            error TEXT
        );
        CREATE TABLE trajectories (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            sample_id TEXT NOT NULL REFERENCES samples(id),
            stop_step INTEGER NOT NULL,
            step0_iou REAL NOT NULL,
            final_iou REAL NOT NULL,
            oracle_iou REAL NOT NULL,
            outcome TEXT NOT NULL,
            UNIQUE (run_id, sample_id)
        );
        CREATE TABLE steps (
            id INTEGER PRIMARY KEY,
            trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            raw_text TEXT NOT NULL,
            reasoning TEXT NOT NULL,
            x1 REAL, y1 REAL, x2 REAL, y2 REAL,
            iou REAL NOT NULL,
            parse_ok INTEGER NOT NULL,
            parse_failure TEXT,
            says_correct INTEGER NOT NULL DEFAULT 0,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL NOT NULL DEFAULT 0,
            UNIQUE (trajectory_id, step)
        );
        """,
    ),
    (
        "0002_jobs",
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            argv TEXT NOT NULL,
            pid INTEGER,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            heartbeat_at TEXT,
            progress_done INTEGER NOT NULL DEFAULT 0,
            progress_total INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            log_path TEXT NOT NULL,
            result TEXT,
            error TEXT,
            resumed_from INTEGER REFERENCES jobs(id)
        );
        CREATE TABLE job_metrics (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX job_metrics_job ON job_metrics(job_id, name, step);
        ALTER TABLE runs ADD COLUMN job_id INTEGER REFERENCES jobs(id);
        ALTER TABLE runs ADD COLUMN pid INTEGER
        """,
    ),
    (
        "0003_imports",
        """
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            dataset TEXT NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
            format TEXT NOT NULL,
            path TEXT NOT NULL,
            split TEXT NOT NULL,
            created_at TEXT NOT NULL,
            read INTEGER NOT NULL,
            imported INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            reasons TEXT NOT NULL
        )
        """,
    ),
    (
        "0004_traces",
        """
        CREATE TABLE traces (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            sample_id TEXT NOT NULL REFERENCES samples(id),
            teacher TEXT NOT NULL,
            kind TEXT NOT NULL,
            origin TEXT NOT NULL,
            status TEXT NOT NULL,
            version INTEGER NOT NULL,
            family TEXT NOT NULL,
            student_text TEXT NOT NULL,
            student_box TEXT,
            student_iou REAL NOT NULL,
            steps TEXT NOT NULL,
            flags TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            final_iou REAL NOT NULL,
            search_text TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (run_id, sample_id, teacher)
        );
        CREATE INDEX traces_status ON traces(status, id);
        CREATE TABLE trace_revisions (
            id INTEGER PRIMARY KEY,
            trace_id INTEGER NOT NULL REFERENCES traces(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            reviewer TEXT NOT NULL,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            diff TEXT NOT NULL,
            snapshot TEXT NOT NULL
        );
        CREATE INDEX trace_revisions_trace ON trace_revisions(trace_id, version);
        CREATE VIRTUAL TABLE traces_fts USING fts5(search_text, content='traces', content_rowid='id');
        CREATE TRIGGER traces_ai AFTER INSERT ON traces BEGIN
            INSERT INTO traces_fts(rowid, search_text) VALUES (new.id, new.search_text);
        END;
        CREATE TRIGGER traces_ad AFTER DELETE ON traces BEGIN
            INSERT INTO traces_fts(traces_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
        END;
        CREATE TRIGGER traces_au AFTER UPDATE ON traces BEGIN
            INSERT INTO traces_fts(traces_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
            INSERT INTO traces_fts(rowid, search_text) VALUES (new.id, new.search_text);
        END
        """,
    ),
    (
        "0005_job_chains",
        """
        ALTER TABLE jobs ADD COLUMN waits_for INTEGER REFERENCES jobs(id);
        ALTER TABLE jobs ADD COLUMN needs_success INTEGER NOT NULL DEFAULT 1
        """,
    ),
    (
        "0006_job_config",
        """
        ALTER TABLE jobs ADD COLUMN config TEXT
        """,
    ),
    (
        "0007_step_own_text",
        """
        ALTER TABLE steps ADD COLUMN own_text TEXT NOT NULL DEFAULT ''
        """,
    ),
    (
        # A model is its paths and its weights' fingerprint (ivt_core/fingerprint.py): new weights at a registered
        # path are a new model. SQLite cannot drop a UNIQUE constraint, so the table is made again: its rows are
        # copied aside, the table dropped and created anew, the rows put back. The foreign keys of runs and of
        # parent_id are checked at commit (deferred), when every id is back; renaming a table instead would
        # rewrite the runs table's reference to the old table's new name.
        "0008_model_fingerprint",
        """
        PRAGMA defer_foreign_keys = ON;
        CREATE TEMP TABLE models_copy AS SELECT * FROM models;
        DROP TABLE models;
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            base_path TEXT NOT NULL,
            adapter_path TEXT NOT NULL DEFAULT '',
            family TEXT NOT NULL,
            parent_id INTEGER REFERENCES models(id),
            origin_job INTEGER,
            created_at TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            fingerprint TEXT NOT NULL DEFAULT '',
            UNIQUE (base_path, adapter_path, fingerprint)
        );
        INSERT INTO models (id, name, base_path, adapter_path, family, parent_id, origin_job, created_at, meta)
            SELECT id, name, base_path, adapter_path, family, parent_id, origin_job, created_at, meta FROM models_copy;
        DROP TABLE models_copy
        """,
    ),
]


def _statements(sql: str):
    """Split a script into statements (trigger bodies keep their inner semicolons)."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


def _runner() -> Migrations:
    runner = Migrations("ivt")
    for name, sql in MIGRATIONS:
        def apply(db: Database, sql: str = sql) -> None:
            for statement in _statements(sql):
                db.execute(statement)

        runner(name=name)(apply)
    return runner


RUNNER = _runner()
LEGACY_TABLE = "_migrations"  # the hand-written runner's record, before sqlite-utils' Migrations


def applied(db: Database) -> list[str]:
    """Names of the migrations already applied, in order."""
    return [migration.name for migration in RUNNER.applied(db)]


def _adopt_legacy_records(db: Database) -> None:
    """Copy what the old runner recorded into sqlite-utils' table, once (the old table is then dropped)."""
    if LEGACY_TABLE not in db.table_names():
        return
    with db.atomic():
        RUNNER.ensure_migrations_table(db)
        known = set(applied(db))
        for row in db.query(f"SELECT name, applied_at FROM {LEGACY_TABLE} ORDER BY id"):
            if row["name"] not in known:
                db[Migrations.migrations_table].insert(
                    {"migration_set": RUNNER.name, "name": row["name"], "applied_at": row["applied_at"]})
        db.execute(f"DROP TABLE {LEGACY_TABLE}")


def migrate(db: Database) -> list[str]:
    """Apply pending migrations, each atomically; return the names applied now."""
    _adopt_legacy_records(db)
    pending = [migration.name for migration in RUNNER.pending(db)]
    if pending:
        RUNNER.apply(db)
        logs.get(__name__).info("applied migrations %s to %s", ", ".join(pending), db.conn.execute(
            "PRAGMA database_list").fetchone()[2] or "memory")
    return pending
