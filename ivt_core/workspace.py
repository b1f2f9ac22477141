"""A workspace: one folder holding the database (``ivt.db``) and the files it points to.

Images generated or rendered by the app are stored content-addressed under ``images/`` (the same bytes are
stored once); rows hold paths relative to the workspace so that a workspace folder can be moved whole.
Imported datasets may keep absolute paths to where their images already are.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlite_utils import Database

from ivt_core.errors import InvalidInputError
from ivt_core.store import connect

DB_NAME = "ivt.db"
DEFAULT_WORKSPACE_ENV = "IVT_WORKSPACE"


def default_workspace_path() -> Path:
    """``$IVT_WORKSPACE`` if set, else ``./workspace``."""
    return Path(os.environ.get(DEFAULT_WORKSPACE_ENV, "workspace"))


@dataclass
class Workspace:
    root: Path

    @classmethod
    def open(cls, path: str | Path | None = None) -> Workspace:
        """Open the workspace at ``path`` (created if missing, schema migrated).

        Raises InvalidInputError if ``path`` is a file or cannot be created.
        """
        root = Path(path) if path is not None else default_workspace_path()
        if root.exists() and not root.is_dir():
            raise InvalidInputError(f"workspace {root} is a file, not a folder; give a folder path")
        try:
            (root / "images").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"cannot create workspace folder {root}: {exc}") from exc
        workspace = cls(root.resolve())
        workspace.connect().close()
        return workspace

    @classmethod
    def existing(cls, path: str | Path | None = None) -> Workspace:
        """Open the workspace at ``path`` for a command that reads what is there (a run, a dataset, a job): never
        creates one where a mistyped path points. Raises InvalidInputError when it holds no database."""
        root = Path(path) if path is not None else default_workspace_path()
        if not (root / DB_NAME).is_file():
            raise InvalidInputError(f"no workspace at {root} (no {DB_NAME} there); give the folder that `ivt data` "
                                    f"or the app made, with --workspace or ${DEFAULT_WORKSPACE_ENV}")
        return cls.open(root)

    @classmethod
    def at(cls, path: str | Path | None = None) -> Workspace:
        """The workspace at ``path`` without touching its files or its database (a distributed rank other than
        rank 0 only reads images)."""
        return cls((Path(path) if path is not None else default_workspace_path()).resolve())

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def connect(self) -> Database:
        """A new connection for the calling thread (pragmas set, migrations applied)."""
        return connect(self.db_path)

    def resolve(self, stored_path: str) -> Path:
        """The file a stored path points to (relative paths are inside the workspace)."""
        path = Path(stored_path)
        return path if path.is_absolute() else self.root / path

    def store_image(self, image: Image.Image) -> str:
        """Save ``image`` as PNG under ``images/`` by content hash; return the stored (relative) path."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        relative = Path("images") / digest[:2] / f"{digest}.png"
        target = self.root / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return relative.as_posix()
