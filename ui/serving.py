"""Serving the app safely: where the credentials come from, a limit on login attempts, and a temporary folder of
the workspace's own (Gradio's shared /tmp/gradio would serve other apps' files to ours and ours to them).

Why a login limit of our own: Gradio's ``auth`` accepts a function but has no attempt limit; the function does
not see the client, so the limit is global: after ``MAX_FAILURES`` wrong passwords within ``WINDOW_S`` seconds
every login is refused for ``LOCKOUT_S`` seconds (a brute force stalls; a person waits half a minute).
"""

from __future__ import annotations

import hmac
import os
import shutil
import threading
import time
from collections import deque
from pathlib import Path

AUTH_ENV = "IVT_AUTH"
MAX_FAILURES, WINDOW_S, LOCKOUT_S = 5, 60.0, 30.0
UPLOADS_KEPT_S = 24 * 3600


def read_credentials(auth: str | None, auth_file: str | None) -> tuple[str, str] | None:
    """(user, password) from ``--auth-file`` (one line USER:PASS), ``--auth`` or ``$IVT_AUTH``, in that order,
    or None. Raises SystemExit with one line when what is given is unusable."""
    source, text = None, None
    if auth_file:
        try:
            text, source = Path(auth_file).read_text().strip().splitlines()[0], f"--auth-file {auth_file}"
        except (OSError, IndexError) as exc:
            raise SystemExit(f"app.py: error: cannot read a USER:PASS line from --auth-file {auth_file} ({exc})"
                             ) from None
    elif auth is not None:
        text, source = auth, "--auth"
    elif os.environ.get(AUTH_ENV):
        text, source = os.environ[AUTH_ENV], f"${AUTH_ENV}"
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit(f"app.py: error: {source} must be USER:PASS with both parts non-empty")
    return user, password


class LoginGuard:
    """Gradio's ``auth`` callable: checks the password in constant time and limits failed attempts."""

    def __init__(self, user: str, password: str, clock=time.monotonic):
        self.user, self.password, self.clock = user, password, clock
        self.failures: deque[float] = deque()
        self.locked_until = 0.0
        self.lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        with self.lock:
            now = self.clock()
            if now < self.locked_until:
                return False
            good = hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
                password.encode(), self.password.encode())
            if good:
                return True
            self.failures.append(now)
            while self.failures and self.failures[0] < now - WINDOW_S:
                self.failures.popleft()
            if len(self.failures) >= MAX_FAILURES:
                self.locked_until, self.failures = now + LOCKOUT_S, deque()
            return False


def private_temp_dir(workspace_root: Path) -> Path:
    """The workspace's own Gradio temporary folder (set as ``GRADIO_TEMP_DIR`` before gradio is imported), with
    uploads older than a day removed."""
    folder = workspace_root / ".gradio"
    folder.mkdir(exist_ok=True)
    cutoff = time.time() - UPLOADS_KEPT_S
    for entry in folder.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            continue
    return folder
