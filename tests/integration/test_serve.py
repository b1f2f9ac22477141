"""``ivt serve``: the OpenAI grounder runs the whole T=2 loop against a real server (the shipped toy model on
CPU) and gets the in-process answers; the server batches requests that arrive together, refuses what it cannot
answer with a message, and asks for a key when it serves beyond the machine."""

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from PIL import Image

from ivt_core.cli import main
from ivt_core.config.serving import ServeConfig
from ivt_core.errors import InvalidInputError
from ivt_core.store.runs import get_run, load_trajectories

EVAL = ["--dataset", "shapes", "--split", "test", "--steps", "2", "--max-new-tokens", "48", "--device", "cpu",
        "--json"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """The shipped toy behind ``ivt serve``'s server, in this process (a thread), on a free port."""
    from ivt_core.serve import build_server

    config = ServeConfig(device="cpu", port=_free_port(), batch_wait_ms=20.0).check()
    server, batcher, line = build_server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started and "serving toy-model" in line
    yield f"http://127.0.0.1:{config.port}/v1", batcher
    server.should_exit = True
    thread.join(timeout=10)


def _run(ws, capsys, *args):
    assert main(["eval", "--workspace", str(ws.root), *EVAL, *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_loop_through_the_server_gives_the_in_process_run(served, shapes_ws, capsys):
    url, batcher = served
    local = _run(shapes_ws, capsys)
    before = len(batcher.batches)
    remote = _run(shapes_ws, capsys, "--endpoint", url, "--concurrency", "4")
    db = shapes_ws.connect()
    runs = [{t.sample_id: [(s.raw_text, s.box) for s in t.steps] for t in load_trajectories(db, r["run_id"])}
            for r in (local, remote)]
    assert runs[0] == runs[1] and len(runs[1]) == 6
    assert sum(len(steps) for steps in runs[1].values()) == 18  # T=2: three answers per sample, boxes drawn
    assert any(box is not None for steps in runs[1].values() for _, box in steps[1:])
    assert {k: v for k, v in local.items() if k != "run_id"} == {k: v for k, v in remote.items() if k != "run_id"}
    assert max(batcher.batches[before:]) > 1  # requests in flight together were answered as one batch
    run = get_run(db, remote["run_id"])
    assert run["config"]["model_path"] == url and run["config"]["endpoint_model"] == "toy-model"


def test_a_run_against_a_server_resumes_against_it(served, shapes_ws, capsys):
    from ivt_core.store.runs import set_run_status

    url, _ = served
    first = _run(shapes_ws, capsys, "--endpoint", url, "--limit", "6")
    db = shapes_ws.connect()
    db.execute("DELETE FROM steps WHERE trajectory_id IN (SELECT id FROM trajectories WHERE run_id = ? AND "
               "sample_id IN (SELECT sample_id FROM trajectories WHERE run_id = ? ORDER BY sample_id LIMIT 2))",
               [first["run_id"], first["run_id"]])
    db.execute("DELETE FROM trajectories WHERE run_id = ? AND sample_id IN (SELECT sample_id FROM trajectories "
               "WHERE run_id = ? ORDER BY sample_id LIMIT 2)", [first["run_id"], first["run_id"]])
    set_run_status(db, first["run_id"], "cancelled")
    resumed = _run(shapes_ws, capsys, "--resume-run", str(first["run_id"]))
    assert resumed["run_id"] == first["run_id"] and resumed["n"] == 6
    assert get_run(db, first["run_id"])["status"] == "done"


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_server_answers_the_openai_format_and_refuses_what_it_cannot_do(served):
    url, _ = served
    picture = {"type": "image_url", "image_url": {"url": _png(Image.new("RGB", (64, 48)))}}
    message = {"role": "user", "content": [picture, {"type": "text", "text": "Where is the red circle?"}]}
    ok = httpx.post(url + "/chat/completions", json={"messages": [message], "max_tokens": 4}, timeout=60)
    body = ok.json()
    assert ok.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] <= 4
    models = httpx.get(url + "/models").json()["data"]
    assert models[0]["id"] == "toy-model" and models[0]["ivt_family"] == "qwen3_vl"
    cases = [({"messages": []}, 400, "non-empty list"),
             ({"messages": [message], "stream": True}, 400, "stream is not supported"),
             ({"messages": [message], "max_tokens": 0}, 400, "max_tokens must be"),
             ({"messages": [message], "model": "gpt-9"}, 404, "serves 'toy-model'"),
             ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
                 "url": "https://example.com/a.png"}}]}]}, 400, "data URL"),
             ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
                 "url": "data:image/png;base64,AAAA"}}]}]}, 400, "no image this server can read"),
             ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message must be the user's")]
    for payload, status, text in cases:
        answer = httpx.post(url + "/chat/completions", json=payload, timeout=30)
        assert answer.status_code == status and text in answer.json()["error"]["message"], (payload, answer.text)
    junk = httpx.post(url + "/chat/completions", content=b"{not json", timeout=30)
    assert junk.status_code == 400 and "not JSON" in junk.json()["error"]["message"]


def test_the_key_is_required_when_one_is_set():
    from fastapi.testclient import TestClient

    from ivt_core.families import get_family
    from ivt_core.serve import Batcher, build_app

    app = build_app(Batcher(lambda conversations, sampling: []), "m", get_family("qwen3_vl"), api_key="s3cret")
    client = TestClient(app)
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_serving_beyond_the_machine_needs_a_key_and_a_taken_port_is_named(served):
    with pytest.raises(InvalidInputError, match="--api-key"):
        ServeConfig(host="0.0.0.0").check()
    ServeConfig(host="0.0.0.0", api_key="k").check()
    port = int(served[0].rsplit(":", 1)[1].split("/")[0])
    taken = subprocess.run([sys.executable, "-m", "ivt_core.cli", "serve", "--device", "cpu", "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    missing = subprocess.run([sys.executable, "-m", "ivt_core.cli", "serve", "/nowhere/model"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "has no config.json" in missing.stderr


def test_the_endpoint_flags_are_checked_before_anything_runs(shapes_ws, capsys):
    code = main(["eval", "--workspace", str(shapes_ws.root), *EVAL, "--endpoint", "gpu-box:8000"])
    assert code == 2 and "must start with http" in capsys.readouterr().err
    code = main(["eval", "--workspace", str(shapes_ws.root), *EVAL, "--endpoint", "http://x/v1", "--gpus", "2"])
    assert code == 2 and "drop --gpus" in capsys.readouterr().err
    code = main(["eval", "--workspace", str(shapes_ws.root), *EVAL, "--endpoint", f"http://127.0.0.1:{_free_port()}/v1"])
    assert code == 2 and "is the server running?" in capsys.readouterr().err
