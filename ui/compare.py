"""Compare: two or three runs on their common samples: numbers with deltas, wins / losses, IoU curves overlaid."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ivt_core.errors import IVTError
from ivt_core.report import compare_runs, summary_rows
from ui.context import AppContext
from ui.explore import run_choices


def compare_view(ctx: AppContext, run_ids: list[int] | None):
    if not run_ids or not 2 <= len(run_ids) <= 3:
        return pd.DataFrame([{"": "pick two or three runs"}]), pd.DataFrame(), None, ""
    try:
        result = compare_runs(ctx.db(), [int(r) for r in run_ids])
    except IVTError as exc:
        return pd.DataFrame([{"": str(exc)}]), pd.DataFrame(), None, f"**{exc}**"
    base = result["runs"][0]
    rows = []
    for index, (label, _) in enumerate(summary_rows(base["metrics"])):
        row = {"": label}
        for run in result["runs"]:
            value = summary_rows(run["metrics"])[index][1]
            first = summary_rows(base["metrics"])[index][1]
            for key in ("acc@0.5", "miou"):
                cell = f"{value[key]:.3f}"
                if run is not base:
                    cell += f" ({value[key] - first[key]:+.3f})"
                row[f"run {run['run_id']} {key}"] = cell
        rows.append(row)
    pairs = pd.DataFrame([{"run": p["run"], "vs": p["against"], "at": p["at"], "wins": p["wins"],
                           "losses": p["losses"], "ties": p["ties"]} for p in result["pairs"]])
    fig = go.Figure()
    for run in result["runs"]:
        curve = run["metrics"]["per_step"]
        fig.add_trace(go.Scatter(x=[p["step"] for p in curve], y=[p["miou"] for p in curve], mode="lines+markers",
                                 name=f"run {run['run_id']} ({run['model']})"))
    fig.update_layout(title="mIoU by step on the common samples", yaxis_range=[0, 1], xaxis={"dtick": 1}, height=340)
    note = (f"{result['samples']} common samples. A win or loss is a difference of more than "
            f"{result['pairs'][0]['band']} IoU for the same sample.")
    return pd.DataFrame(rows), pairs, fig, note


def build(ctx: AppContext) -> list:
    choices = run_choices(ctx)
    runs = gr.Dropdown(choices=choices, multiselect=True, max_choices=3, label="Runs to compare (2 or 3)",
                       value=[c[1] for c in choices[:2]] if len(choices) >= 2 else None)
    note = gr.Markdown()
    table = gr.Dataframe(label="Numbers (delta against the first run)", interactive=False)
    with gr.Row():
        pairs = gr.Dataframe(label="Per-sample wins / losses", interactive=False)
        curve = gr.Plot()
    refresh = gr.Button("Refresh runs")
    runs.change(lambda r: compare_view(ctx, r), runs, [table, pairs, curve, note])
    refresh.click(lambda: gr.update(choices=run_choices(ctx)), None, runs)
    def first_view(_current):
        """Runs listed afresh at page load; the two newest are compared, as at the app's start."""
        choices = run_choices(ctx)
        chosen = [value for _, value in choices[:2]]
        return (gr.update(choices=choices, value=chosen), *compare_view(ctx, chosen))

    return [(first_view, [runs], [runs, table, pairs, curve, note])]
