"""The one object every tab receives: the workspace, a per-thread database connection, and the loaded model.

In-process inference (the Probe tab) runs through ``grounder``: one model is kept loaded and a lock makes calls
wait their turn, and the UI registers those events under one Gradio concurrency id (``INFERENCE``) with limit 1,
so two browser tabs queue instead of overloading a GPU. Store reads and timers use other events and never wait
behind inference.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlite_utils import Database

from ivt_core.store import ThreadConnections
from ivt_core.store.models import get_model
from ivt_core.workspace import Workspace

INFERENCE = "inference"


@dataclass
class AppContext:
    workspace: Workspace
    connections: ThreadConnections = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _loaded: tuple[int, object] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.connections = ThreadConnections(self.workspace.db_path)

    def db(self) -> Database:
        """This thread's connection (Gradio runs handlers on worker threads)."""
        return self.connections.get()

    def infer(self, model_id: int, work):
        """``work(grounder)`` for the registered model ``model_id``, one call at a time; the model stays loaded
        (the previous one is dropped). Raises IVTError if the model cannot be loaded."""
        from ivt_core.grounders.transformers_grounder import TransformersGrounder

        with self._lock:
            if self._loaded is None or self._loaded[0] != model_id:
                self._loaded = None
                row = get_model(self.db(), model_id)
                self._loaded = (model_id, TransformersGrounder.load(row["base_path"], row["adapter_path"] or None))
            return work(self._loaded[1])
