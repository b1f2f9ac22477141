"""Browser tests: the real app in a subprocess, driven by Playwright through Debian's headless Chromium.

Any console error or page error fails the test.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("IVT_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scripted_run(ws):
    """Two stored runs (the newest: a scripted model whose box grows each step) for Explore and Compare."""
    from ivt_core.bootstrap import ensure_default_data
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.workspace import Workspace
    from tests.fakes import ScriptedGrounder

    workspace = Workspace.open(ws)
    ensure_default_data(workspace)
    answers = ['{"bbox_2d": [100, 100, 400, 400]}', 'Move it. {"bbox_2d": [150, 150, 500, 500]}', "no idea"]
    evaluate(workspace, ScriptedGrounder(lambda text, step: '{"bbox_2d": [0, 0, 1000, 1000]}'), "/whole-image",
             EvalRequest("shapes", "val", LoopConfig(steps=1), limit=20))
    evaluate(workspace, ScriptedGrounder(lambda text, step: answers[step]), "/scripted",
             EvalRequest("shapes", "val", LoopConfig(steps=2), limit=20))


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    port = _free_port()
    ws = tmp_path_factory.mktemp("browser-ws")
    _scripted_run(ws)
    log = open(ws / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--workspace", str(ws), "--port", str(port)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((ws / "app.log").read_text()) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("the app did not start within 120 s:\n" + (ws / "app.log").read_text())
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page
        browser.close()
        assert not errors, f"console errors: {errors}"
