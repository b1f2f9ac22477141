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
    from ivt_core.bootstrap import ensure_default_data, ensure_toy_model
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.workspace import Workspace
    from tests.fakes import ScriptedGrounder

    workspace = Workspace.open(ws)
    ensure_default_data(workspace)
    ensure_toy_model(workspace)  # model 1: what the Train and Probe forms pick by default
    _traces(workspace)  # first, so that the two runs below are the newest (Explore and Compare open them)
    answers = ['{"bbox_2d": [100, 100, 400, 400]}', 'Move it. {"bbox_2d": [150, 150, 500, 500]}', "no idea"]
    for reader in ("a", "b"):  # two runs with the same boxes (so the same first sample), other words
        evaluate(workspace, ScriptedGrounder(lambda text, step, r=reader: f'Reading {r.upper()}. {{"bbox_2d": '
                                             '[0, 0, 500, 500]}'), f"/run-{reader}",
                 EvalRequest("shapes", "val", LoopConfig(steps=0), limit=20))
    evaluate(workspace, ScriptedGrounder(lambda text, step: '{"bbox_2d": [0, 0, 1000, 1000]}'), "/whole-image",
             EvalRequest("shapes", "val", LoopConfig(steps=1), limit=20))
    evaluate(workspace, ScriptedGrounder(lambda text, step: answers[step]), "/scripted",
             EvalRequest("shapes", "val", LoopConfig(steps=2), limit=20))


def _traces(workspace):
    """Pending corrective traces from a run whose boxes sit 40 % of a width right of the truth; 4 approved."""
    import json

    from ivt_core.data.sample import load_image
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.store.samples import get_samples
    from ivt_core.store.traces import list_traces
    from ivt_core.teachers.geometric import GeometricTeacher
    from ivt_core.traces import SynthConfig, approve, synthesize
    from tests.fakes import ScriptedGrounder

    samples = get_samples(workspace.connect(), "shapes", "val", limit=30)
    truth = {load_image(workspace.resolve(s.image_path)).tobytes(): s for s in samples}

    def answer(text, step, conversation):
        box = truth[conversation[0]["content"][0]["image"].tobytes()].bbox
        shift = 0.4 * box.width
        return json.dumps({"bbox_2d": [round((v + (shift if k % 2 == 0 else 0)) / 0.224)
                                       for k, v in enumerate(box.to_xyxy())]})

    result = evaluate(workspace, ScriptedGrounder(answer, with_conversation=True), "/shifted",
                      EvalRequest("shapes", "val", LoopConfig(steps=0), limit=30))
    synthesize(workspace, result.run_id, GeometricTeacher(), SynthConfig(steps=2))
    db = workspace.connect()
    for trace in list_traces(db, limit=4):
        approve(db, trace["id"], trace["version"], "fixture")


@pytest.fixture(scope="session")
def browser_ws(tmp_path_factory):
    """The app's workspace, filled before the app starts."""
    ws = tmp_path_factory.mktemp("browser-ws")
    _scripted_run(ws)
    return ws


@pytest.fixture(scope="session")
def app_url(browser_ws):
    port = _free_port()
    ws = browser_ws
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


def _leaving(navigate, leaving: list):
    """``navigate`` (the page's goto or reload), with ``leaving`` non-empty from its call until the new document
    commits: what the old document logs meanwhile is its unloading, which no user sees. Gradio's `beforeunload`
    handler closes its client, aborting the open streams; with an event in flight (on a busy 2-core machine a
    timer's poll often is) that logs "Connection errored out", AbortError, a 404 on the closed session..."""
    def wrapped(*args, **kwargs):
        leaving.append(True)
        try:
            return navigate(*args, **kwargs)
        finally:
            leaving.clear()
    return wrapped


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors, leaving = [], []

        def console(message):
            if message.type == "error" and not leaving:
                errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda e: None if leaving else errors.append(str(e)))
        page.on("framenavigated", lambda frame: leaving.clear() if frame == page.main_frame else None)
        for name in ("goto", "reload"):
            setattr(page, name, _leaving(getattr(page, name), leaving))
        yield page
        browser.close()
        assert not errors, f"console errors: {errors}"
