"""The one object every tab receives: the workspace and a per-thread database connection."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlite_utils import Database

from ivt_core.store import ThreadConnections
from ivt_core.workspace import Workspace


@dataclass
class AppContext:
    workspace: Workspace
    connections: ThreadConnections = field(init=False)

    def __post_init__(self) -> None:
        self.connections = ThreadConnections(self.workspace.db_path)

    def db(self) -> Database:
        """This thread's connection (Gradio runs handlers on worker threads)."""
        return self.connections.get()
