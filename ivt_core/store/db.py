"""Opening the workspace database: one place that sets the pragmas, one connection per thread.

All SQL of the project lives in this package (``migrations`` for the schema, the query modules for the rest);
every query function takes the ``Database`` as its first argument.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database

from ivt_core.errors import InvalidInputError
from ivt_core.store.migrations import migrate


def connect(path: str | Path) -> Database:
    """Open (creating if needed) the database at ``path``, set the pragmas and apply pending migrations.

    Raises InvalidInputError if the file exists but is not an SQLite database.
    """
    db = Database(str(path))
    try:
        # WAL: the UI reads while a job writes; readers never block the writer nor the other way round.
        db.enable_wal()
        # Jobs and the UI write from different processes; wait for a lock instead of failing at once.
        db.execute("PRAGMA busy_timeout = 10000")
        # ... and take the write lock when a write transaction begins: a deferred one that reads first (the
        # FTS triggers on traces do) cannot upgrade to a writer once another process has committed, and gets
        # "database is locked" at once, without waiting (SQLITE_BUSY_SNAPSHOT). Implicit transactions of
        # write statements begin IMMEDIATE too.
        db.conn.isolation_level = "IMMEDIATE"
        # Deleting a run must take its trajectories and steps with it (ON DELETE CASCADE).
        db.execute("PRAGMA foreign_keys = ON")
        # NORMAL is crash-safe under WAL (a power cut may lose the last commit, never corrupt the file).
        db.execute("PRAGMA synchronous = NORMAL")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise InvalidInputError(
            f"{path} is not a usable IVT Studio database ({exc}); point --workspace elsewhere"
        ) from exc
    return db


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """A transaction that holds the write lock from its start (``BEGIN IMMEDIATE``), waiting for it up to the
    busy timeout; nested inside another transaction it is a savepoint. Commits, or rolls back on any error."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


class ThreadConnections:
    """Hands each thread its own connection to one database file (sqlite3 connections are not shareable)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()

    def get(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path)
            self._local.db = db
        return db
