"""Schema migrations, applied in order, each in its own transaction, recorded in ``_migrations``.

Add a schema change by appending a ``(name, sql)`` pair; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

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


def applied(db: Database) -> list[str]:
    """Names of the migrations already applied, in order."""
    if "_migrations" not in db.table_names():
        return []
    return [row["name"] for row in db.query("SELECT name FROM _migrations ORDER BY id")]


def migrate(db: Database) -> list[str]:
    """Apply pending migrations, each atomically; return the names applied now."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT UNIQUE, applied_at TEXT)")
    done = set(applied(db))
    new = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        with db.atomic():
            for statement in _statements(sql):
                db.execute(statement)
            db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", [name])
        new.append(name)
    return new
