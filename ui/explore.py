"""Explore: a run's numbers, its samples worst-first, and one sample stepped through with its boxes."""

from __future__ import annotations

import shlex

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from ivt_core import jobs
from ivt_core.config.evaluation import EvalConfig
from ivt_core.errors import InvalidInputError, IVTError
from ivt_core.explore import count_rows, sample_rows, step_view
from ivt_core.metrics import OUTCOMES
from ivt_core.report import summary_rows
from ivt_core.store.models import get_model
from ivt_core.store.runs import get_run
from ivt_core.store.views import run_sources
from ui.choices import model_choices, parse_split_choice, refreshed, run_choices, split_choices
from ui.config_form import config_fields, config_from_form
from ui.context import AppContext

DISPLAY_SIDE = 448
# The step marker on a sample's IoU curve: a thin line laid over the plotly figure at the step's x position,
# moved in the browser when the step changes (and placed again whenever plotly redraws the figure). Redrawing the
# figure, or even Plotly.relayout of one shape, for every move took 16-55 ms of the browser's main thread on a
# 2-core machine; moving a line takes well under one (docs/LOG.md, ui_latency). It reads the axis mapping plotly
# keeps on the figure element (_fullLayout); without it no marker is drawn and the curve is still there.
MOVE_MARKER = """(step) => {
  window.ivtExploreStep = Number(step);
  const place = (tries) => {
    const plot = document.querySelector('#explore-curve .js-plotly-plot');
    if (plot && !plot.ivtMarkerHooked && plot.on) {
      plot.ivtMarkerHooked = true;
      plot.on('plotly_afterplot', () => { plot.ivtOffset = null; place(0); });
    }
    const full = plot && plot._fullLayout;
    if (!full || !full.xaxis || !full.xaxis.l2p || !full.yaxis) {
      if (tries > 0) setTimeout(() => place(tries - 1), 100);  // the first figure is still being drawn
      return;
    }
    const host = plot.parentElement;
    let line = document.getElementById('explore-step-line');
    if (!line || line.parentElement !== host) {
      if (line) line.remove();
      line = document.createElement('div');
      line.id = 'explore-step-line';
      host.style.position = 'relative';
      host.appendChild(line);
    }
    // the figure's offset is read once per drawing: reading it on every move forced a layout of the page
    plot.ivtOffset = plot.ivtOffset || [plot.offsetLeft, plot.offsetTop];
    const [left, top] = plot.ivtOffset;
    const x = left + full.xaxis._offset + full.xaxis.l2p(window.ivtExploreStep);
    line.style.cssText = 'position:absolute;pointer-events:none;border-left:2px dotted #555;width:0;' +
      `left:${x - 1}px;top:${top + full.yaxis._offset}px;height:${full.yaxis._length}px`;
    line.dataset.step = String(window.ivtExploreStep);
  };
  place(20);
}"""
SHOWN = 500  # samples listed at once (the worst first); the count line says how many match


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


SAMPLE_COLUMNS = ["sample", "expression", "source", "step 0", "final", "outcome", "unreadable"]


def _placeholder(text: str) -> pd.DataFrame:
    """The sample table with one row saying why it lists no sample."""
    return pd.DataFrame([(text, *[""] * (len(SAMPLE_COLUMNS) - 1))], columns=SAMPLE_COLUMNS)


def samples_frame(ctx: AppContext, run_id, outcome, failures, search, source="all", low=0.0, high=1.0):
    """The filtered sample list (worst first), the sample picker, and a line saying how many match."""
    if not run_id:
        return pd.DataFrame(columns=SAMPLE_COLUMNS), gr.update(choices=[], value=None), ""
    filters = {"outcome": None if outcome in (None, "all") else outcome, "parse_failures": bool(failures),
               "search": search or None, "source": None if source in (None, "all") else source,
               "iou_band": (float(low or 0), float(1 if high is None else high))}
    try:
        rows = sample_rows(ctx.db(), run_id, limit=SHOWN, **filters)
        total = count_rows(ctx.db(), run_id, **filters)
    except IVTError as exc:
        return _placeholder("(none)"), gr.update(choices=[], value=None), f"**{exc}**"
    frame = pd.DataFrame([(r["sample_id"], r["expression"], r["source"], round(r["step0_iou"], 3),
                           round(r["final_iou"], 3), r["outcome"], r["failures"]) for r in rows],
                         columns=SAMPLE_COLUMNS) if rows else _placeholder("(none match)")
    ids = [r["sample_id"] for r in rows]
    shown = f" (the {SHOWN:,} worst are listed)" if total > SHOWN else ""
    return frame, gr.update(choices=ids, value=ids[0] if ids else None), f"{total:,} samples match{shown}."


def evaluation_from_form(ctx: AppContext, model_id, split_choice, values: dict) -> EvalConfig:
    """The evaluation the form asks for: the picked model (a checkpoint, or a model evaluated on a server before:
    on that server again), or, with a server URL typed in, the model on that server. Raises InvalidInputError."""
    from ivt_core.evaluate import is_endpoint
    from ivt_core.grounders.openai_grounder import served_model

    if not split_choice:
        raise InvalidInputError("pick a dataset split")
    dataset, split_name = parse_split_choice(split_choice)
    values = {**values, "endpoint": (values.get("endpoint") or "").strip(),
              "endpoint_model": (values.get("endpoint_model") or "").strip()}
    fixed: dict = {"dataset": dataset, "split": split_name}
    if not values["endpoint"]:
        if not model_id:
            raise InvalidInputError("pick a model, or give the URL of a server")
        model = get_model(ctx.db(), int(model_id))
        if is_endpoint(model["base_path"]):  # evaluated on a server before: on that server, the same model
            values.update(endpoint=model["base_path"], endpoint_model=values["endpoint_model"] or served_model(
                model["name"]))
        else:
            fixed.update(model=model["base_path"], adapter=model.get("adapter_path") or "")
    return config_from_form(EvalConfig, values, **fixed)  # checked when the job is submitted


def queue_evaluation(ctx: AppContext, config: EvalConfig) -> str:
    """Submit an evaluation behind the model job ahead of it; one line saying what happened."""
    try:
        job_id, ahead = jobs.submit_in_turn(ctx.workspace, "eval", config)
    except IVTError as exc:
        return f"**Not started:** {exc}"
    when = f"queued behind job {ahead} (one model job at a time)" if ahead else "started"
    return (f"Evaluation job {job_id} {when}: `{shlex.join(jobs.shown_command('eval', config))}`. Its run appears "
            "in Explore and Compare when it is done (Overview shows its progress).")


GLANCE = 12  # thumbnails of the first listed (worst) samples


def glance_images(ctx: AppContext, run_id, frame: pd.DataFrame) -> list[tuple[Image.Image, str]]:
    """Thumbnails of the first listed samples at the step the run answered with (box in red, truth in green)."""
    if not run_id or frame is None or "sample" not in frame or "final" not in frame:
        return []
    shown = []
    for _, row in frame.head(GLANCE).iterrows():
        try:
            image, info = step_view(ctx.workspace, ctx.db(), int(run_id), row["sample"], 99, clamp=True)
        except IVTError:
            continue
        image.thumbnail((160, 160))
        shown.append((image, f"{row['sample']} · final IoU {info['iou']:.2f}"))
    return shown


def source_choices(ctx: AppContext, run_id) -> dict:
    sources = run_sources(ctx.db(), run_id) if run_id else []
    return gr.update(choices=["all", *sources], value="all")


def step_content(ctx: AppContext, run_id, sample_id, step, history, ground_truth, model_view=False):
    """What a step move changes: the image with that step's box, and the step's text. Returns (image, text,
    info); info is None when nothing could be shown."""
    if not run_id or not sample_id:
        return None, "Pick a run and a sample.", None
    try:
        image, info = step_view(ctx.workspace, ctx.db(), run_id, sample_id, int(step), history, ground_truth,
                                model_view=bool(model_view))
    except IVTError as exc:
        return None, f"**{exc}**", None
    scale = DISPLAY_SIDE / max(image.size)
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    box = "no readable box" if info["box"] is None else "[" + ", ".join(f"{v:.1f}" for v in info["box"]) + "]"
    traces = ", ".join(f"#{t['id']} ({t['status']})" for t in info["traces"][:5]) or "none yet"
    text = (f"**{info['expression']}** · step {info['step']} of {info['steps'] - 1} · IoU **{info['iou']:.3f}** · "
            f"box {box}" + (f" · unreadable: {info['parse_failure']}" if not info["parse_ok"] else "")
            + f" · {info['tokens_in']:,} tokens in, {info['tokens_out']:,} out, {info['latency_ms']:.0f} ms"
            + (" · *the image as the model saw it*" if model_view else "")
            + f"\n\nTraces of this sample (Traces tab, search its expression): {traces}"
            + f"\n\n**Reasoning:** {info['reasoning'] or '(none)'}\n\n**Raw answer:**\n```\n{info['raw_text']}\n```"
            + (f"\n\n**Verdict derived from its name** (`--verdict derived`); the model's own answer was:\n```\n"
               f"{info['own_text']}\n```" if info.get("own_text") else ""))
    return image, text, info


def show_step(ctx: AppContext, run_id, sample_id, step, history, ground_truth, model_view=False):
    """A sample's whole view: image and text of the step, the sample's IoU curve, and the slider's range."""
    image, text, info = step_content(ctx, run_id, sample_id, step, history, ground_truth, model_view)
    if info is None:
        return image, text, None, gr.update()
    ious = info["ious"]
    fig = go.Figure(go.Scatter(x=list(range(len(ious))), y=ious, mode="lines+markers", name="IoU"))
    fig.update_layout(title="This sample's IoU per step (dotted line: the step shown)", yaxis_range=[0, 1],
                      xaxis={"dtick": 1}, height=260, margin={"t": 40, "b": 30})
    return image, text, fig, gr.update(maximum=max(1, info["steps"] - 1))


def build(ctx: AppContext) -> list:
    gr.Markdown("Step 0, the final step and the label-free stopping rules are deployable numbers; the oracle row "
                "picks the best step with ground truth. Use the arrow keys on the step slider.")
    choices = run_choices(ctx)
    run = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, label="Run", elem_id="explore-run")
    with gr.Row():
        with gr.Column(scale=3):  # eight metric columns: wider than the curve
            table = gr.Dataframe(label="Run metrics", interactive=False)
        with gr.Column(scale=2):
            curve = gr.Plot(label="IoU by step")
    with gr.Row():
        outcome = gr.Dropdown(["all", *OUTCOMES], value="all", label="Outcome")
        source = gr.Dropdown(["all"], value="all", label="Source")
        low = gr.Slider(0, 1, value=0, step=0.05, label="Final IoU from")
        high = gr.Slider(0, 1, value=1, step=0.05, label="Final IoU to")
    with gr.Row():
        failures = gr.Checkbox(label="Only samples with unreadable answers")
        search = gr.Textbox(label="Search expressions", placeholder="words, then Enter")
    matched = gr.Markdown(elem_id="explore-matched")
    samples = gr.Dataframe(label="Samples, worst final IoU first", interactive=False, max_height=260)
    with gr.Accordion("The listed samples at a glance (click one to open it)", open=True):
        glance = gr.Gallery(columns=GLANCE // 2, height=300, allow_preview=False, elem_id="explore-glance",
                            show_label=False)
    with gr.Row():
        with gr.Column(scale=2):
            sample = gr.Dropdown(label="Sample", choices=[])
            step = gr.Slider(0, 2, value=0, step=1, label="Step", elem_id="explore-step")
            with gr.Row():
                history = gr.Checkbox(label="Show earlier boxes")
                truth = gr.Checkbox(value=True, label="Show ground truth (green; never shown to the model)")
                seen = gr.Checkbox(label="What the model saw at this step", elem_id="explore-model-view")
            image = gr.Image(type="pil", format="png", label="The box at this step", height=460,
                             elem_id="explore-image")
        with gr.Column(scale=2):
            text = gr.Markdown(elem_id="explore-text")
            sample_curve = gr.Plot(elem_id="explore-curve")
    refresh = gr.Button("Refresh runs, models and splits")
    with gr.Accordion("Start a new evaluation (background job)", open=False):
        models = model_choices(ctx)
        splits = split_choices(ctx)
        with gr.Row():
            eval_model = gr.Dropdown(models, value=models[0][1] if models else None, label="Model")
            eval_split = gr.Dropdown(splits, value=splits[0] if splits else None, label="Dataset split")
        with gr.Row():
            settings = config_fields(EvalConfig)  # T, stopping policy, sample limit: the CLI's defaults and limits
        eval_btn = gr.Button("Start evaluation", elem_id="eval-start")
        eval_note = gr.Markdown(elem_id="eval-message")

    def start_eval(model_id, split_choice, *values):
        try:
            config = evaluation_from_form(ctx, model_id, split_choice, dict(zip(settings, values, strict=True)))
        except IVTError as exc:
            return f"**Not started:** {exc}"
        return queue_evaluation(ctx, config)

    eval_btn.click(start_eval, [eval_model, eval_split, *settings.values()], eval_note)

    view_inputs = [run, sample, step, history, truth, seen]
    view_outputs = [image, text, sample_curve, step]
    filters = [run, outcome, failures, search, source, low, high]
    listed = [samples, sample, matched]
    # the sample view follows the run too: when two runs list the same sample first, the sample picker does not
    # change, and without this last step the previous run's box and answer would stay under the new run's header
    run.change(lambda r: (*run_summary(ctx, r), source_choices(ctx, r)), run, [table, curve, source]).then(
        lambda *a: samples_frame(ctx, *a), filters, listed).then(
        lambda *a: show_step(ctx, *a[:2], 0, *a[3:]), view_inputs, view_outputs).then(lambda: 0, None, step)
    for trigger in (outcome.change, failures.change, search.submit, source.input, low.release, high.release):
        trigger(lambda *a: samples_frame(ctx, *a), filters, listed)
    sample.change(lambda *a: show_step(ctx, *a[:2], 0, *a[3:]), view_inputs, view_outputs).then(
        lambda: 0, None, step)
    # A step move changes the picture and the text (from the server, skipping the queue: a store read and a
    # render, never inference) and moves the curve's step marker in the browser: the curve itself depends only
    # on the sample, and redrawing it from the server doubled a move's time (docs/LOG.md, ui_latency).
    for trigger in (step.change, history.change, truth.change, seen.change):
        trigger(lambda *a: step_content(ctx, *a)[:2], view_inputs, view_outputs[:2], show_progress="hidden",
                queue=False)
    step.change(None, step, None, js=MOVE_MARKER)
    sample_curve.change(None, step, None, js=MOVE_MARKER)
    samples.change(lambda r, frame: glance_images(ctx, r, frame), [run, samples], glance, show_progress="hidden")

    def open_glanced(frame: pd.DataFrame, evt: gr.SelectData):
        return frame.iloc[evt.index]["sample"] if evt.index is not None and "sample" in frame else gr.update()

    glance.select(open_glanced, samples, sample)

    def pick(frame: pd.DataFrame, evt: gr.SelectData):
        return frame.iloc[evt.index[0]]["sample"] if evt.index is not None else gr.update()

    samples.select(pick, samples, sample)
    refresh.click(lambda r, m, s: (refreshed(run_choices(ctx), r), refreshed(model_choices(ctx), m),
                                   refreshed(split_choices(ctx), s)),
                  [run, eval_model, eval_split], [run, eval_model, eval_split])

    def first_view(_current, model_id, split_choice):
        """Runs, models and splits are listed afresh at every page load (a run that finished or a model trained
        after the app started is there without a restart), and the newest run is shown."""
        choices = run_choices(ctx)
        chosen = choices[0][1] if choices else None
        summary = run_summary(ctx, chosen)
        listing = samples_frame(ctx, chosen, "all", False, "")
        return (gr.update(choices=choices, value=chosen), *summary, source_choices(ctx, chosen), *listing,
                refreshed(model_choices(ctx), model_id), refreshed(split_choices(ctx), split_choice))

    # what to fill when the page opens (the app wires it to its load event)
    return [(first_view, [run, eval_model, eval_split], [run, table, curve, source, *listed, eval_model, eval_split])]
