"""The mirage report of a run, and side-by-side comparison of runs on the same samples.

``build_report`` gathers every number of ``metrics.run_metrics`` for a run, overall and per source dataset
(and per expression type for the shapes world), with the run's settings. ``report_html`` renders it as one
self-contained HTML page with plotly figures (plotly.js inlined once, so it opens offline). ``compare_runs``
restricts two or three runs to their common samples and reports each run's numbers, deltas against the first,
and per-sample wins / losses. The JSON forms carry the same numbers as the HTML.
"""

from __future__ import annotations

import html
from collections import defaultdict

from sqlite_utils import Database

from ivt_core.error_kinds import kind_shares
from ivt_core.errors import InvalidInputError
from ivt_core.metrics import OUTCOME_BAND, THRESHOLDS, run_metrics
from ivt_core.render import describe
from ivt_core.store.models import get_model
from ivt_core.store.runs import get_run, load_trajectories, run_samples_meta, run_verdict

ROWS = ("step0", "final")


def build_report(db: Database, run_id: int) -> dict:
    """Every number of a run, overall and broken down. Raises NotFoundError for an unknown run."""
    run = get_run(db, run_id)
    trajectories = load_trajectories(db, run_id)
    if not trajectories:
        raise InvalidInputError(f"run {run_id} has no trajectories yet (status {run['status']})")
    meta = run_samples_meta(db, run_id)
    by_source: dict[str, list] = defaultdict(list)
    by_type: dict[str, list] = defaultdict(list)
    for t in trajectories:
        info = meta.get(t.sample_id, {"source": "", "meta": {}})
        by_source[info["source"] or "(none)"].append(t)
        if "expression_type" in info["meta"]:
            by_type[info["meta"]["expression_type"]].append(t)
    model = get_model(db, run["model_id"])
    return {
        "run": {key: run[key] for key in ("id", "dataset", "split", "steps", "policy", "prompt_family",
                                          "prompt_version", "status", "n_samples", "created_at")},
        "model": {"id": model["id"], "name": model["name"], "base_path": model["base_path"],
                  "adapter_path": model["adapter_path"], "family": model["family"]},
        "render_style": run["render_style"],
        "complete": run["status"] == "done",
        "metrics": run_metrics(trajectories),
        "by_source": {k: run_metrics(v) for k, v in sorted(by_source.items())},
        "by_expression_type": {k: run_metrics(v) for k, v in sorted(by_type.items())},
        "error_kinds": kind_shares(trajectories, meta),  # below IoU 0.5
        "error_kinds_at_0.9": kind_shares(trajectories, meta, 0.9),  # below IoU 0.9: loose edges show here
    }


def summary_rows(metrics: dict) -> list[tuple[str, dict]]:
    """(label, numbers) rows in report order: step 0, final, each label-free policy, then the oracle."""
    rows = [("step 0", metrics["step0"]), ("final step", metrics["final"])]
    rows += [(f"stop: {name}", numbers) for name, numbers in metrics["policies"].items()]
    rows.append((metrics["oracle"]["label"], metrics["oracle"]))
    return rows


def kinds_text(kinds: dict, tau: float = 0.5) -> str:
    """Error kinds at step 0 and at the final step, one line each."""
    return "\n".join(f"{'step 0' if row == 'step0' else 'final step'} boxes at IoU {tau:g}: "
                     + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()) for row, shares in kinds.items())


def text_table(metrics: dict) -> str:
    head = f"{'':<28}" + "".join(f"{'Acc@' + format(t, 'g'):>10}" for t in THRESHOLDS) + f"{'mIoU':>8}"
    lines = [head]
    for label, d in summary_rows(metrics):
        lines.append(f"{label:<28}" + "".join(f"{d[f'acc@{t:g}']:>10.3f}" for t in THRESHOLDS) + f"{d['miou']:>8.3f}")
    outcomes = ", ".join(f"{k} {v:.1%}" for k, v in metrics["outcomes"].items())
    lines.append(f"degradation per step {metrics['degradation']:.3f}; outcomes (band {OUTCOME_BAND}): {outcomes}")
    lines.append(f"unparsable answers {metrics['parse_failure_rate']:.1%} "
                 f"(step 0: {metrics['parse_failure_rate_step0']:.1%})")
    return "\n".join(lines)


def _html_table(metrics: dict) -> str:
    head = "".join(f"<th>Acc@{t:g}</th>" for t in THRESHOLDS) + "<th>mIoU</th>"
    body = []
    for label, d in summary_rows(metrics):
        cls = ' class="oracle"' if label.startswith("oracle") else ""
        cells = "".join(f"<td>{d[f'acc@{t:g}']:.3f}</td>" for t in THRESHOLDS) + f"<td>{d['miou']:.3f}</td>"
        body.append(f"<tr{cls}><th>{html.escape(label)}</th>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def figures(report: dict) -> list:
    """Plotly figures: IoU by step (overall and per source), and outcome shares."""
    import plotly.graph_objects as go

    curve = go.Figure()
    groups = {"all": report["metrics"], **({f"source: {k}": v for k, v in report["by_source"].items()}
                                           if len(report["by_source"]) > 1 else {})}
    for name, m in groups.items():
        steps = [p["step"] for p in m["per_step"]]
        curve.add_trace(go.Scatter(x=steps, y=[p["miou"] for p in m["per_step"]], mode="lines+markers",
                                   name=f"mIoU ({name})"))
        curve.add_trace(go.Scatter(x=steps, y=[p["acc@0.5"] for p in m["per_step"]], mode="lines+markers",
                                   name=f"Acc@0.5 ({name})", line={"dash": "dot"}))
    curve.update_layout(title="IoU by refinement step", xaxis_title="step", yaxis_title="score",
                        yaxis_range=[0, 1], xaxis={"dtick": 1}, height=420)
    outcomes = report["metrics"]["outcomes"]
    bars = go.Figure(go.Bar(x=list(outcomes), y=list(outcomes.values()),
                            marker_color=["#2a9d8f", "#e76f51", "#8d99ae", "#e9c46a"]))
    bars.update_layout(title="Outcome shares (final vs step 0)", yaxis_range=[0, 1], height=360)
    return [curve, bars]


def report_html(report: dict) -> str:
    """A self-contained HTML page of the report (opens offline)."""
    run, model, m = report["run"], report["model"], report["metrics"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>IVT report: run {run['id']}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "tr.oracle{color:#8a5a00;font-style:italic}.warn{background:#fff3cd;padding:8px}</style></head><body>",
        f"<h1>Run {run['id']}: {html.escape(model['name'])} on {html.escape(run['dataset'])}/"
        f"{html.escape(run['split'])}</h1>",
        f"<p>T = {run['steps']} refinement steps, stopping policy <b>{html.escape(run['policy'])}</b>, prompts "
        f"{html.escape(run['prompt_family'])}/{html.escape(run['prompt_version'])}, box drawn as "
        f"{html.escape(describe(report['render_style']))}, {m['n']} samples, status "
        f"{html.escape(run['status'])}. Model: {html.escape(model['base_path'])}"
        f"{' + ' + html.escape(model['adapter_path']) if model['adapter_path'] else ''}.</p>",
    ]
    if not report["complete"]:
        parts.append("<p class='warn'>This run is not complete: numbers cover the samples stored so far.</p>")
    parts += [
        "<p>Step 0, final step and every label-free stopping rule are deployable numbers. The last row picks the "
        "best step with ground truth: an upper bound no deployed system can reach.</p>",
        _html_table(m),
        f"<p>Per-step IoU degradation: <b>{m['degradation']:.3f}</b>. Unparsable answers: "
        f"{m['parse_failure_rate']:.1%} (step 0: {m['parse_failure_rate_step0']:.1%}). Outcomes: "
        + ", ".join(f"{k} {v:.1%}" for k, v in m["outcomes"].items()) + ".</p>",
        "<p>What the boxes are (below IoU 0.5: the object they overlap most): "
        + html.escape(kinds_text(report["error_kinds"]) + "\n" + kinds_text(report["error_kinds_at_0.9"], 0.9))
        .replace("\n", "<br>") + "</p>",
    ]
    for index, fig in enumerate(figures(report)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if index == 0 else False))
    for title, groups in (("By source", report["by_source"]), ("By expression type", report["by_expression_type"])):
        if len(groups) > 1:
            parts.append(f"<h2>{title}</h2>")
            for name, gm in groups.items():
                parts.append(f"<h3>{html.escape(name)} ({gm['n']} samples)</h3>{_html_table(gm)}")
    parts.append("</body></html>")
    return "\n".join(parts)


def compare_runs(db: Database, run_ids: list[int]) -> dict:
    """Two or three runs on their common samples: numbers, deltas against the first run, wins and losses.

    Raises InvalidInputError for fewer than 2 or more than 3 runs, or runs without samples in common.
    """
    if not 2 <= len(run_ids) <= 3:
        raise InvalidInputError("compare takes two or three run ids")
    trajs = {rid: {t.sample_id: t for t in load_trajectories(db, rid)} for rid in run_ids}
    runs = {rid: get_run(db, rid) for rid in run_ids}
    common = set.intersection(*(set(t) for t in trajs.values()))
    if not common:
        raise InvalidInputError(f"runs {', '.join(map(str, run_ids))} share no samples; compare runs of one split")
    ordered = sorted(common)
    metrics = {rid: run_metrics([trajs[rid][s] for s in ordered]) for rid in run_ids}
    base = run_ids[0]
    out: dict = {"samples": len(ordered), "runs": [], "pairs": []}
    for rid in run_ids:
        model = get_model(db, runs[rid]["model_id"])
        entry = {"run_id": rid, "model": model["name"], "steps": runs[rid]["steps"],
                 "policy": runs[rid]["policy"], "verdict": run_verdict(runs[rid]), "metrics": metrics[rid]}
        if rid != base:
            entry["delta"] = {row: {k: metrics[rid][row][k] - metrics[base][row][k] for k in metrics[base][row]
                                    if isinstance(metrics[base][row][k], float)}
                              for row in (*ROWS, "oracle")}
        out["runs"].append(entry)
    for rid in run_ids[1:]:
        for row, attr in (("step0", "step0_iou"), ("final", "final_iou")):
            diffs = {s: getattr(trajs[rid][s], attr) - getattr(trajs[base][s], attr) for s in ordered}
            out["pairs"].append({
                "run": rid, "against": base, "at": row, "band": OUTCOME_BAND,
                "wins": sum(d > OUTCOME_BAND for d in diffs.values()),
                "losses": sum(d < -OUTCOME_BAND for d in diffs.values()),
                "ties": sum(abs(d) <= OUTCOME_BAND for d in diffs.values()),
                "biggest_wins": sorted(diffs, key=diffs.get, reverse=True)[:5],
                "biggest_losses": sorted(diffs, key=diffs.get)[:5],
            })
    return out


def compare_text(result: dict) -> str:
    lines = [f"{result['samples']} common samples"]
    head = f"{'':<34}" + "".join(f"{'run ' + str(r['run_id']):>12}" for r in result["runs"])
    lines.append(head)
    labels = [label for label, _ in summary_rows(result["runs"][0]["metrics"])]
    for index, label in enumerate(labels):
        for key in ("acc@0.5", "miou"):
            cells = []
            for r in result["runs"]:
                value = summary_rows(r["metrics"])[index][1][key]
                base = summary_rows(result["runs"][0]["metrics"])[index][1][key]
                cells.append(f"{value:.3f}" + (f" ({value - base:+.3f})" if r is not result["runs"][0] else ""))
            lines.append(f"{label + ' ' + key:<34}" + "".join(f"{c:>12}" if len(c) < 12 else f"  {c}" for c in cells))
    for label, key, fmt in (("degradation per step", "degradation", "{:.3f}"),
                            ("unreadable answers", "parse_failure_rate", "{:.3f}")):
        base = result["runs"][0]["metrics"][key]
        cells = [fmt.format(r["metrics"][key]) + (f" ({r['metrics'][key] - base:+.3f})" if i else "")
                 for i, r in enumerate(result["runs"])]
        lines.append(f"{label:<34}" + "".join(f"{c:>12}" if len(c) < 12 else f"  {c}" for c in cells))
    for p in result["pairs"]:
        lines.append(f"run {p['run']} vs run {p['against']} at {p['at']}: {p['wins']} wins, {p['losses']} losses, "
                     f"{p['ties']} ties (band {p['band']})")
    return "\n".join(lines)
