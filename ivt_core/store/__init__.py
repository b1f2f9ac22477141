"""The workspace database (SQLite through sqlite-utils): connections, migrations and every query."""

from ivt_core.store.db import ThreadConnections, connect, write_transaction

__all__ = ["ThreadConnections", "connect", "write_transaction"]
