"""Explore: a run's numbers, its samples worst-first, and one sample stepped through with its boxes."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from ivt_core import jobs
from ivt_core.errors import IVTError
from ivt_core.explore import sample_rows, step_view
from ivt_core.metrics import OUTCOMES
from ivt_core.report import summary_rows
from ivt_core.stopping import LABEL_FREE_POLICIES
from ivt_core.store.models import get_model
from ivt_core.store.runs import get_run, list_runs
from ui.context import AppContext
from ui.overview import split_choices
from ui.train import model_choices

DISPLAY_SIDE = 448


def run_choices(ctx: AppContext) -> list[tuple[str, int]]:
    return [(f"run {r['id']}: {r['dataset']}/{r['split']} T={r['steps']} {r['policy']} ({r['status']}, "
             f"{r['n_samples']} samples)", r["id"]) for r in list_runs(ctx.db())]


def run_summary(ctx: AppContext, run_id: int | None):
    if not run_id:
        return pd.DataFrame([{"": "pick a run"}]), None
    metrics = get_run(ctx.db(), run_id)["metrics"]
    if not metrics:
        return pd.DataFrame([{"": "run not complete yet"}]), None
    table = pd.DataFrame([{"": label, **{k: round(v, 3) for k, v in d.items() if k.startswith(("acc", "miou"))}}
                          for label, d in summary_rows(metrics)])
    steps = [p["step"] for p in metrics["per_step"]]
    fig = go.Figure([go.Scatter(x=steps, y=[p["miou"] for p in metrics["per_step"]], name="mIoU", mode="lines+markers"),
                     go.Scatter(x=steps, y=[p["acc@0.5"] for p in metrics["per_step"]], name="Acc@0.5",
                                mode="lines+markers", line={"dash": "dot"})])
    fig.update_layout(title="IoU by step (all samples)", yaxis_range=[0, 1], xaxis={"dtick": 1}, height=300,
                      margin={"t": 40, "b": 30})
    return table, fig


def samples_frame(ctx: AppContext, run_id, outcome, failures, search):
    if not run_id:
        return pd.DataFrame(), gr.update(choices=[], value=None)
    rows = sample_rows(ctx.db(), run_id, None if outcome == "all" else outcome, failures, search or None)
    frame = pd.DataFrame([{"sample": r["sample_id"], "expression": r["expression"], "step 0": round(r["step0_iou"], 3),
                           "final": round(r["final_iou"], 3), "outcome": r["outcome"], "unreadable": r["failures"]}
                          for r in rows] or [{"sample": "(none match)"}])
    ids = [r["sample_id"] for r in rows]
    return frame, gr.update(choices=ids, value=ids[0] if ids else None)


def show_step(ctx: AppContext, run_id, sample_id, step, history, ground_truth):
    if not run_id or not sample_id:
        return None, "Pick a run and a sample.", None, gr.update()
    try:
        image, info = step_view(ctx.workspace, ctx.db(), run_id, sample_id, int(step), history, ground_truth)
    except IVTError as exc:
        return None, f"**{exc}**", None, gr.update()
    scale = DISPLAY_SIDE / max(image.size)
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    box = "no readable box" if info["box"] is None else "[" + ", ".join(f"{v:.1f}" for v in info["box"]) + "]"
    text = (f"**{info['expression']}** · step {info['step']} of {info['steps'] - 1} · IoU **{info['iou']:.3f}** · "
            f"box {box}" + (f" · unreadable: {info['parse_failure']}" if not info["parse_ok"] else "")
            + f"\n\n**Reasoning:** {info['reasoning'] or '(none)'}\n\n**Raw answer:**\n```\n{info['raw_text']}\n```")
    ious = info["ious"]
    fig = go.Figure(go.Scatter(x=list(range(len(ious))), y=ious, mode="lines+markers", name="IoU"))
    fig.add_vline(x=int(step), line_dash="dot")
    fig.update_layout(title="This sample's IoU per step", yaxis_range=[0, 1], xaxis={"dtick": 1}, height=260,
                      margin={"t": 40, "b": 30})
    return image, text, fig, gr.update(maximum=max(1, info["steps"] - 1))


def build(ctx: AppContext) -> list:
    gr.Markdown("Step 0, the final step and the label-free stopping rules are deployable numbers; the oracle row "
                "picks the best step with ground truth. Use the arrow keys on the step slider.")
    choices = run_choices(ctx)
    run = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, label="Run")
    with gr.Row():
        table = gr.Dataframe(label="Run metrics", interactive=False)
        curve = gr.Plot(label="IoU by step")
    with gr.Row():
        outcome = gr.Dropdown(["all", *OUTCOMES], value="all", label="Outcome")
        failures = gr.Checkbox(label="Only samples with unreadable answers")
        search = gr.Textbox(label="Search expressions")
    samples = gr.Dataframe(label="Samples, worst final IoU first", interactive=False, max_height=260)
    with gr.Row():
        with gr.Column(scale=2):
            sample = gr.Dropdown(label="Sample", choices=[])
            step = gr.Slider(0, 2, value=0, step=1, label="Step")
            with gr.Row():
                history = gr.Checkbox(label="Show earlier boxes")
                truth = gr.Checkbox(value=True, label="Show ground truth (green; never shown to the model)")
            image = gr.Image(type="pil", format="png", label="The box at this step", height=460)
        with gr.Column(scale=2):
            text = gr.Markdown()
            sample_curve = gr.Plot()
    refresh = gr.Button("Refresh runs")
    with gr.Accordion("Start a new evaluation (background job)", open=False):
        models = model_choices(ctx)
        splits = split_choices(ctx)
        with gr.Row():
            eval_model = gr.Dropdown(models, value=models[0][1] if models else None, label="Model")
            eval_split = gr.Dropdown(splits, value=splits[0] if splits else None, label="Dataset split")
            eval_steps = gr.Slider(0, 6, value=2, step=1, label="T (refinement steps)")
            eval_stop = gr.Dropdown(list(LABEL_FREE_POLICIES), value="fixed", label="Stopping policy")
            eval_limit = gr.Number(0, label="At most N samples (0: all)", precision=0, minimum=0)
        eval_btn = gr.Button("Start evaluation", elem_id="eval-start")
        eval_note = gr.Markdown()

    def start_eval(model_id, split_choice, steps, stop, limit):
        if not model_id or not split_choice:
            return "**Pick a model and a split.**"
        dataset, split_name = split_choice.split("/", 1)
        try:
            args = jobs.eval_job_args(get_model(ctx.db(), int(model_id)), dataset, split_name, int(steps), stop,
                                      int(limit) if limit else None)
            job_id = jobs.submit(ctx.workspace, "eval", args)
        except IVTError as exc:
            return f"**Not started:** {exc}"
        return f"Started evaluation job {job_id}; follow it on the Overview tab, then press Refresh runs."

    eval_btn.click(start_eval, [eval_model, eval_split, eval_steps, eval_stop, eval_limit], eval_note)

    view_inputs = [run, sample, step, history, truth]
    view_outputs = [image, text, sample_curve, step]
    filters = [run, outcome, failures, search]
    run.change(lambda r: run_summary(ctx, r), run, [table, curve]).then(
        lambda *a: samples_frame(ctx, *a), filters, [samples, sample])
    for trigger in (outcome.change, failures.change, search.submit):
        trigger(lambda *a: samples_frame(ctx, *a), filters, [samples, sample])
    sample.change(lambda *a: show_step(ctx, *a[:2], 0, *a[3:]), view_inputs, view_outputs).then(
        lambda: 0, None, step)
    for trigger in (step.change, history.change, truth.change):
        trigger(lambda *a: show_step(ctx, *a), view_inputs, view_outputs, show_progress="hidden")
    def pick(frame: pd.DataFrame, evt: gr.SelectData):
        return frame.iloc[evt.index[0]]["sample"] if evt.index is not None else gr.update()

    samples.select(pick, samples, sample)
    refresh.click(lambda: gr.update(choices=run_choices(ctx)), None, run)

    def first_view(_current):
        """Runs are listed afresh at every page load (a run that finished after the app started, such as the
        first-start evaluation, is there without a restart), and the newest is shown, as at the app's start."""
        choices = run_choices(ctx)
        chosen = choices[0][1] if choices else None
        summary = run_summary(ctx, chosen)
        frame, picker = samples_frame(ctx, chosen, "all", False, "")
        return (gr.update(choices=choices, value=chosen), *summary, frame, picker)

    # what to fill when the page opens (the app wires it to its load event)
    return [(first_view, [run], [run, table, curve, samples, sample])]
