"""Web-app latency: the Explore step slider on a toy-model run, and the Traces queue with many traces stored.

    python benchmarks/ui_latency.py [--traces 100000] [--samples 20] [--repeat 30] [--json build/ui_latency.json]
                                    [--no-browser] [--chromium /usr/bin/chromium]

Two kinds of figures:

- server side (the handler alone, no network, no drawing): Explore's step move (``step_content``: the image with
  the step's box and the step's text; the curve's marker moves in the browser) over every step of a toy-model
  run (evaluated here, T=2, on the CPU), and the Traces tab's first view, next trace, counts, full-text search
  and approve-and-advance with ``--traces`` traces in the store (copies of synthesized ones);
- end to end in the browser (unless ``--no-browser``): the real app (``app.py``) on that workspace, driven by
  Playwright through headless Chromium. A slider move is timed in the page, from the arrow key's keydown event
  to the first animation frame that shows all three of the new step's image, text and IoU-curve step marker
  (and, as an upper bound, from Python's key press call to Playwright seeing it, driver round trips included);
  a review from the **a** key until the counts and the next trace are on the page (driver included).

Prints a table (median and p95 in ms) and writes JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def summarize(times: list[float]) -> dict:
    times = sorted(times)
    return {"median_ms": statistics.median(times), "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
            "max_ms": times[-1], "n": len(times)}


def timed(fn, repeat: int) -> dict:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return summarize(times)


SLIDER_DONE = """([step, oldSrc, sameImage]) => {
  const text = document.querySelector('#explore-text');
  const img = document.querySelector('#explore-image img');
  const marker = document.getElementById('explore-step-line');  // the curve's step marker (ui/explore.py)
  const done = text && text.innerText.includes('step ' + step + ' of') && img && img.complete &&
    (sameImage || img.src !== oldSrc) && marker && marker.dataset.step === String(step);
  if (done) window.ivtDoneAt = performance.now();
  return done;
}"""


def browser_latency(workspace_root: str, repeat: int, chromium: str, images: list[bytes]) -> dict:
    """The Explore slider and the Traces approve key, timed in headless Chromium against the real app.

    ``images``: the first listed sample's rendered steps (PNG bytes), so that a move between two steps whose
    pictures are identical (say, two unreadable answers) does not wait for a new image that never comes."""
    import socket
    import subprocess
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    log = open(Path(workspace_root) / "app.log", "w")  # noqa: SIM115 - closed with the server below
    server = subprocess.Popen([sys.executable, "app.py", "--workspace", workspace_root, "--port", str(port),
                               "--no-first-eval"], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    results = {}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox",
                                                                         "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="load", timeout=60_000)
            page.get_by_role("tab", name="Explore").click()
            page.wait_for_function(SLIDER_DONE, arg=[0, "", False], timeout=60_000)
            slider = page.locator("#explore-step input[type=range]")
            slider.focus()
            page.evaluate("() => document.addEventListener('keydown', () => { window.ivtKeyAt = performance.now(); },"
                          " true)")
            path = [1, 2, 1, 0]
            times, in_page = [], []
            for i in range(repeat + 2):  # two warm-up moves
                step, before = path[i % len(path)], path[i % len(path) - 1]
                old = page.evaluate("() => document.querySelector('#explore-image img').src")
                start = time.perf_counter()
                slider.press("ArrowRight" if step > before else "ArrowLeft")
                try:
                    page.wait_for_function(SLIDER_DONE, arg=[step, old, images[step] == images[before]],
                                           polling="raf", timeout=30_000)
                except Exception:
                    print(page.locator("#explore-text").inner_text()[:200], file=sys.stderr)
                    raise
                times.append((time.perf_counter() - start) * 1000)
                in_page.append(page.evaluate("() => window.ivtDoneAt - window.ivtKeyAt"))
            results["browser: explore slider keydown -> image + text + curve shown"] = summarize(in_page[2:])
            results["  same, Python key press -> Playwright sees it"] = summarize(times[2:])

            page.get_by_role("tab", name="Traces").click()
            page.locator("#trace-counts").get_by_text("approved").wait_for(timeout=60_000)
            times = []
            for _ in range(repeat):
                counts = page.locator("#trace-counts").inner_text()
                header = page.locator("#trace-header").inner_text()
                page.locator("body").click(position={"x": 5, "y": 5})
                start = time.perf_counter()
                page.locator("body").press("a")
                page.wait_for_function(
                    "([counts, header]) => document.querySelector('#trace-counts').innerText !== counts && "
                    "document.querySelector('#trace-header').innerText !== header",
                    arg=[counts, header], polling="raf", timeout=30_000)
                times.append((time.perf_counter() - start) * 1000)
            results["browser: traces approve key -> counts + next trace shown"] = summarize(times)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    return results


def fill_traces(workspace, run_id: int, total: int) -> int:
    """Synthesize traces from the run, then copy them (as other teachers) until ``total`` are stored."""
    from ivt_core.teachers.geometric import GeometricTeacher
    from ivt_core.traces import SynthConfig, synthesize

    synthesize(workspace, run_id, GeometricTeacher(), SynthConfig(steps=2, include_zero=True, keep_ratio=1.0))
    db = workspace.connect()
    base = db["traces"].count
    columns = [c.name for c in db["traces"].columns if c.name not in ("id", "teacher")]
    copy = 0
    with db.atomic():
        while db["traces"].count < total:
            copy += 1
            db.execute(f"INSERT INTO traces ({', '.join(columns)}, teacher) SELECT {', '.join(columns)}, "
                       f"'copy-{copy}' FROM traces WHERE teacher = 'geometric' LIMIT ?",
                       [min(base, total - db["traces"].count)])
    return db["traces"].count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", default="build/ui_latency.json")
    parser.add_argument("--no-browser", action="store_true", help="only the server-side figures")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)

    from ivt_core.bootstrap import ensure_default_data, ensure_toy_model, toy_model_path
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig
    from ivt_core.review import next_trace, queue_filters
    from ivt_core.traces import approve
    from ivt_core.workspace import Workspace
    from ui import explore, traces
    from ui.context import AppContext

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.open(tmp)
        ensure_default_data(workspace)
        ensure_toy_model(workspace)
        grounder = TransformersGrounder.load(toy_model_path(), device="cpu")
        started = time.perf_counter()
        run = evaluate(workspace, grounder, str(toy_model_path()),
                       EvalRequest("shapes", "test", LoopConfig(steps=2), limit=args.samples))
        print(f"toy-model run of {args.samples} samples, T=2: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ctx = AppContext(workspace)
        samples = [r["sample_id"] for r in explore.sample_rows(ctx.db(), run.run_id)]

        def slider(i):
            explore.step_content(ctx, run.run_id, samples[i % len(samples)], i % 3, True, True)

        results["explore: slider move (image + text)"] = timed(slider, args.repeat)
        stored = fill_traces(workspace, run.run_id, args.traces)
        print(f"{stored:,} traces stored", file=sys.stderr)
        filters = queue_filters("pending")
        first = next_trace(ctx.db(), None, filters)
        results[f"traces ({stored:,}): first view"] = timed(
            lambda i: traces.show(ctx, next_trace(ctx.db(), None, filters)["id"], 1), args.repeat)
        results[f"traces ({stored:,}): next trace"] = timed(
            lambda i: next_trace(ctx.db(), first["id"] + i * 997, filters), args.repeat)
        results[f"traces ({stored:,}): counts per status"] = timed(
            lambda i: traces.counts_text(ctx, filters), args.repeat)
        search = queue_filters("pending", search="small circle")
        results[f"traces ({stored:,}): full-text search, first match"] = timed(
            lambda i: next_trace(ctx.db(), None, search), args.repeat)

        def approve_and_advance(i):
            current = next_trace(ctx.db(), None, filters)
            approve(ctx.db(), current["id"], current["version"], "bench")
            nxt = next_trace(ctx.db(), current["id"], filters)
            traces.show(ctx, nxt["id"], 1)

        results[f"traces ({stored:,}): approve + advance + show"] = timed(approve_and_advance, args.repeat)
        if not args.no_browser:
            shown = []  # what Explore shows first: the worst sample, history off, ground truth on
            for step in range(3):
                image = explore.step_content(ctx, run.run_id, samples[0], step, False, True)[0]
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                shown.append(buffer.getvalue())
            results.update(browser_latency(str(workspace.root), args.repeat, args.chromium, shown))
    width = max(len(k) for k in results)
    print(f"{'measure':<{width}}  median ms  p95 ms  max ms")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_ms']:9.1f}  {r['p95_ms']:6.1f}  {r['max_ms']:6.1f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
