"""Probe: the mirage probe on one sample: counterfactual boxes drawn as if the model had answered them, and
where the model moves each (does it judge the box, or react to a box being there?)."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ivt_core.boxes import Box
from ivt_core.data.sample import load_image
from ivt_core.errors import InvalidInputError, IVTError
from ivt_core.limits import MAX_EXPRESSION_CHARS, check_text
from ivt_core.probe import probe_samples, summarize_probe
from ivt_core.render import RenderStyle, render_box
from ivt_core.store.samples import get_samples
from ui.choices import model_choices, parse_split_choice, refreshed, run_choices, split_choices
from ui.context import INFERENCE, AppContext

SHOWN = RenderStyle(label="shown")
ANSWER = RenderStyle(color=(30, 100, 255), label="answer", fill_alpha=0.1)


def pick_sample(ctx: AppContext, choice: str | None, index: float):
    if not choice:
        raise InvalidInputError("no dataset yet: generate or import one in the Data tab")
    dataset, split = parse_split_choice(choice)
    found = get_samples(ctx.db(), dataset, split, limit=1, offset=max(0, int(index or 0)))
    if not found:
        raise InvalidInputError(f"{choice} has no sample number {int(index or 0)}")
    return found[0]


def sample_expression(ctx: AppContext, choice, index):
    try:
        return pick_sample(ctx, choice, index).expression, ""
    except IVTError as exc:
        return "", f"**{exc}**"


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


# the answers table's columns (also its headers before the first probe) and their widths
ANSWER_COLUMNS = {"shown": "12%", "shown IoU": "8%", "answer IoU": "8%", "moved (1 - IoU shown/answer)": "10%",
                  "gain": "7%", "says correct": "7%", "readable": "7%", "answer": "41%"}


def run_probe(ctx: AppContext, model_id, choice, index, expression, seed):
    empty = ([], pd.DataFrame(columns=list(ANSWER_COLUMNS)), None)
    if not model_id:
        return *empty, "**Pick a model.**"
    if not expression or not expression.strip():
        return *empty, "**The expression cannot be empty:** type what the model should find."
    try:
        check_text(expression, "expression", MAX_EXPRESSION_CHARS)  # the model runs inside the web server
        sample = dataclasses.replace(pick_sample(ctx, choice, index), expression=expression.strip())
        image = load_image(ctx.workspace.resolve(sample.image_path))
        rows = ctx.infer(int(model_id), lambda g: probe_samples(g, [sample], [image], seed=int(seed or 0)))
    except IVTError as exc:
        return *empty, f"**{exc}**"
    gallery = []
    for row in rows:
        shown = render_box(image, Box(*row.shown_box) if row.shown_box else None, SHOWN, ground_truth=sample.bbox)
        shown = render_box(shown, Box(*row.next_box) if row.next_box else None, ANSWER)
        shown = shown.resize((shown.width * 2, shown.height * 2))
        before = "no box" if row.shown_iou is None else f"IoU {row.shown_iou:.2f}"
        gallery.append((shown, f"{row.shown}: {before} -> {row.next_iou:.2f}"))
    table = pd.DataFrame([(r.shown, _r(r.shown_iou), round(r.next_iou, 3), _r(r.moved), _r(r.gain), r.says_correct,
                           r.parse_ok, _clip(r.raw_text)) for r in rows], columns=list(ANSWER_COLUMNS))
    points = [r for r in rows if r.shown_iou is not None and r.moved is not None]
    fig = go.Figure(go.Scatter(x=[r.shown_iou for r in points], y=[r.moved for r in points], mode="markers+text",
                               text=[r.shown for r in points], textposition="top center"))
    fig.update_layout(title="How far each box is moved, by its IoU", xaxis_title="IoU of the box shown",
                      yaxis_title="moved", xaxis_range=[-0.05, 1.05], yaxis_range=[-0.05, 1.1], height=340)
    summary = summarize_probe(rows)
    corr = summary["corr_shown_iou_vs_moved"]
    note = (f"Correlation of shown IoU with how far the box moved: **{'n/a' if corr is None else f'{corr:+.2f}'}**. "
            "A model that judges boxes moves bad ones more than good ones (clearly negative); one sample is only "
            "a glimpse: `ivt probe` runs it over a split. Red: the box shown, blue: the model's answer, green: "
            "ground truth.")
    return gallery, table, fig, note


def run_verifier(ctx: AppContext, model_id, run_id, limit, reasoning_first=False,
                 progress=gr.Progress()):  # noqa: B008
    """The verifier test of the picked model on a run's step-0 boxes: the summary and a picture of P(keep) on
    right and on wrong boxes (kept with the model, as ``ivt verifier`` does); ``reasoning_first``: P(keep) read
    after the model's own reasoning (``verifier`` module doc)."""
    from ivt_core.store.runs import get_run
    from ivt_core.verifier import judge_run, store_verdict, summary_text

    if not model_id or not run_id:
        return "**Pick a model (above) and a run whose step-0 boxes it should judge.**", None
    try:
        limit = int(limit) if limit else None
        if limit is not None and limit < 1:
            raise InvalidInputError("at most N boxes: give 1 or more, or leave it empty for all")
        total = limit or get_run(ctx.db(), int(run_id))["n_samples"]
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            progress((done[0], total), desc="judging boxes", unit="boxes")

        summary, rows = ctx.infer(int(model_id), lambda g: judge_run(ctx.workspace, ctx.db(), g, int(run_id),
                                                                     limit=limit, progress=advance,
                                                                     reasoning_first=bool(reasoning_first)))
    except IVTError as exc:
        return f"**{exc}**", None
    store_verdict(ctx.db(), int(model_id), summary)
    figure = go.Figure()
    bins = 20  # P(keep) in steps of 0.05; each bar the share of that kind's boxes (drawn here, not by plotly.js)
    for name, keep, color in (("right boxes", True, "#2ca02c"), ("wrong boxes", False, "#d62728")):
        values = [r["p_keep"] for r in rows if (r["iou"] >= summary["threshold"]) == keep]
        counts = [0] * bins
        for value in values:
            counts[min(bins - 1, int(value * bins))] += 1
        figure.add_trace(go.Bar(x=[(i + 0.5) / bins for i in range(bins)],
                                y=[c / len(values) if values else 0.0 for c in counts], width=1 / bins,
                                name=f"{name} ({len(values)})", marker_color=color, opacity=0.6))
    auroc = summary["auroc"]
    title = "P(\"The box is correct.\"" + (" | its own reasoning)" if reasoning_first else ")")
    figure.update_layout(barmode="overlay", height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40}, showlegend=True,
                         title=f"{title} - AUROC {auroc:.3f}" if auroc is not None else title,
                         xaxis={"title": "P(keep)", "range": [0, 1]},
                         yaxis_title="share of boxes")
    return summary_text(summary).replace("\n", "  \n"), figure


def _r(value):
    return None if value is None else round(value, 3)


def build(ctx: AppContext) -> list:
    gr.Markdown("The mirage probe asks the model to refine boxes it never gave: the ground truth, its own step-0 "
                "box, a look-alike (another object of the asked shape), shifted and random boxes, and no box.")
    models, splits = model_choices(ctx), split_choices(ctx)
    with gr.Row():
        model = gr.Dropdown(models, value=models[0][1] if models else None, label="Model")
        split = gr.Dropdown(splits, value=splits[0] if splits else None, label="Split")
        index = gr.Number(0, label="Sample number", precision=0, minimum=0)
        seed = gr.Number(0, label="Seed (random box)", precision=0)
    expression = gr.Textbox(label="Expression (edit to ask about something else)", elem_id="probe-expression")
    start = gr.Button("Run the probe", variant="primary", elem_id="probe-run")
    note = gr.Markdown(elem_id="probe-note")
    gallery = gr.Gallery(label="Counterfactuals", columns=6, height=300)
    with gr.Row():
        # fixed widths: a long answer wraps inside its own (wide) column instead of squeezing the headers
        table = gr.Dataframe(pd.DataFrame(columns=list(ANSWER_COLUMNS)), label="Answers", interactive=False,
                             wrap=True, elem_id="probe-answers", column_widths=list(ANSWER_COLUMNS.values()),
                             scale=2)  # eight columns: twice the plot's width, so that headers are not cut up
        plot = gr.Plot(scale=1)
    for trigger in (split.change, index.change):
        trigger(lambda c, i: sample_expression(ctx, c, i), [split, index], [expression, note])
    start.click(lambda *a: run_probe(ctx, *a), [model, split, index, expression, seed], [gallery, table, plot, note],
                concurrency_id=INFERENCE, concurrency_limit=1)
    with gr.Accordion("Verifier test: can the model above tell a run's right step-0 boxes from its wrong ones?",
                      open=False):
        gr.Markdown("The run's own step-0 boxes (a base model's real mistakes) are drawn as in the run and the "
                    "model is asked to refine each; its probability of answering \"The box is correct.\" is read "
                    "from one forward pass. AUROC 0.5: it cannot tell right from wrong boxes, and no stopping rule "
                    "built on its verdict can beat single shot (`ivt verifier` does the same). A model that reasons "
                    "before its verdict (\"It is on the blue circle. Wrong colour.\") is read after its own "
                    "reasoning: tick the box (`ivt verifier --reasoning-first`).")
        with gr.Row():
            judged = gr.Dropdown(run_choices(ctx), label="Run whose step-0 boxes are judged", elem_id="verifier-run")
            most = gr.Number(100, label="At most N boxes (empty: all)", precision=0, minimum=1)
            reasons = gr.Checkbox(False, label="The model reasons before its verdict (read P(keep) after its own "
                                               "reasoning)", elem_id="verifier-reasoning-first")
        verify = gr.Button("Run the verifier test", elem_id="verifier-start")
        verdict = gr.Markdown(elem_id="verifier-note")
        verdict_plot = gr.Plot(elem_id="verifier-plot")
    verify.click(lambda m, r, n, f: run_verifier(ctx, m, r, n, f), [model, judged, most, reasons],
                 [verdict, verdict_plot],
                 concurrency_id=INFERENCE, concurrency_limit=1)

    def first_view(model_id, choice, i, run_id):
        """Models, splits and runs listed afresh at page load (a model trained since the app started is there)."""
        splits_now = split_choices(ctx)
        choice = choice if choice in splits_now else (splits_now[0] if splits_now else None)
        return (refreshed(model_choices(ctx), model_id), refreshed(splits_now, choice),
                *sample_expression(ctx, choice, i), refreshed(run_choices(ctx), run_id))

    return [(first_view, [model, split, index, judged], [model, split, expression, note, judged])]
