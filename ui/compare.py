"""Compare: two or three runs on their common samples: numbers with deltas, wins / losses, IoU curves overlaid,
and one sample's trajectories side by side under one step slider."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from ivt_core.comparison import SHOWS, per_sample, side_by_side
from ivt_core.errors import IVTError
from ivt_core.paper_table import (
    TABLE_THRESHOLDS,
    changes_text,
    paper_table,
    sampled_runs_of_base,
    sampled_single_shot,
    verifier_cell,
)
from ivt_core.report import compare_runs, summary_rows
from ivt_core.stopping import ORACLE_LABEL
from ivt_core.store.runs import list_runs
from ui.choices import run_choices
from ui.context import AppContext
from ui.explore import DISPLAY_SIDE

MAX_RUNS = 3
LISTED = 500
PAIR_COLUMNS = ["run", "vs", "at", "wins", "losses", "ties"]  # also the headers of an empty table (not "1 2 3")


def compare_view(ctx: AppContext, run_ids: list[int] | None):
    if not run_ids or not 2 <= len(run_ids) <= 3:
        return pd.DataFrame([{"": "pick two or three runs"}]), pd.DataFrame(columns=PAIR_COLUMNS), None, ""
    try:
        result = compare_runs(ctx.db(), [int(r) for r in run_ids])
    except IVTError as exc:
        return pd.DataFrame([{"": str(exc)}]), pd.DataFrame(columns=PAIR_COLUMNS), None, f"**{exc}**"
    base = result["runs"][0]
    rows = []
    for index, (label, _) in enumerate(summary_rows(base["metrics"])):
        row = {"": label}
        for run in result["runs"]:  # one column per run (Acc@0.5 and mIoU in one cell), so that three runs fit
            value = summary_rows(run["metrics"])[index][1]
            first = summary_rows(base["metrics"])[index][1]
            cells = []
            for key, name in (("acc@0.5", "Acc@0.5"), ("miou", "mIoU")):
                delta = f" ({value[key] - first[key]:+.3f})" if run is not base else ""
                cells.append(f"{name} {value[key]:.3f}{delta}")
            derived = " · derived verdict" if run["verdict"] == "derived" else ""
            baseline = " · baseline" if run is base else ""
            row[f"run {run['run_id']} · {run['model']}{derived}{baseline}"] = " · ".join(cells)
        rows.append(row)
    pairs = pd.DataFrame([(p["run"], p["against"], p["at"], p["wins"], p["losses"], p["ties"])
                          for p in result["pairs"]], columns=PAIR_COLUMNS)
    fig = go.Figure()
    for run in result["runs"]:
        curve = run["metrics"]["per_step"]
        fig.add_trace(go.Scatter(x=[p["step"] for p in curve], y=[p["miou"] for p in curve], mode="lines+markers",
                                 name=f"run {run['run_id']} ({run['model']})"))
    fig.update_layout(title="mIoU by step on the common samples", yaxis_range=[0, 1], xaxis={"dtick": 1}, height=340)
    note = (f"{result['samples']} common samples. A win or loss is a difference of more than "
            f"{result['pairs'][0]['band']} IoU for the same sample.")
    return pd.DataFrame(rows), pairs, fig, note


def paper_view(ctx: AppContext, run_ids: list[int] | None, candidates: list[int] | None = None):
    """The paper's rows for the selected runs, the baseline taken as the base model's run (``ivt paper-table``);
    ``candidates``: more sampled single-shot runs of the base model for the best-of-K row (the comparison above
    takes three runs at most)."""
    if not run_ids:
        return pd.DataFrame([{"": "pick the base model's run (as the baseline) and the trained models' runs"}]), ""
    try:
        picked = [int(r) for r in run_ids]
        runs, sampled = sampled_runs_of_base(ctx.db(), picked + [int(c) for c in candidates or []
                                                                 if int(c) not in picked])
        table = paper_table(ctx.db(), runs, best_of=sampled)
    except IVTError as exc:
        return pd.DataFrame([{"": str(exc)}]), f"**{exc}**"

    def cell(d: dict | None) -> str:
        return "-" if d is None else "/".join(f"{d[f'acc@{t:g}']:.3f}" for t in TABLE_THRESHOLDS)

    rows = []
    for row in table["rows"]:
        vs = row.get("vs_single_shot", {}).get("final")
        rows.append({"": row["label"], "step 0": cell(row["step0"]), "final step": cell(row.get("final")),
                     "best label-free rule": (f"{cell(row['best_rule'])} ({row['best_rule']['rule']})"
                                              if "best_rule" in row else "-"),
                     ORACLE_LABEL: cell(row.get("oracle")),
                     "final vs single shot": (f"{vs['wins']} wins, {vs['losses']} losses, p={vs['p']:.2g}"
                                              if vs else "-"),
                     "degradation / step": f"{row['degradation']:.3f}" if "degradation" in row else "-",
                     "verifier AUROC": verifier_cell(row) if "verifier" in row else "-"})
    steps = [f"**{row['label']}**: " + "; ".join(
        f"step {s['step']}: fixed {s['fix']:.1%}, broken {s['break']:.1%}, degradation {s['degradation']:.3f}; "
        f"{changes_text(s)}" for s in row["per_step"]) for row in table["rows"] if row.get("per_step")]
    note = (f"{table['dataset']}/{table['split']}, {table['samples']} common samples; Acc at IoU 0.5 / 0.7 / 0.9.  \n"
            + "  \n".join(steps) + "  \n" + "  \n".join(f"*{n}*" for n in table["notes"]))
    return pd.DataFrame(rows), note


def sample_frame(ctx: AppContext, run_ids, show):
    """The common samples, biggest final-IoU difference against the first run first; the picker; a count line."""
    empty = pd.DataFrame(columns=["sample", "expression"])  # headers, not "1 2 3"
    if not run_ids or not 2 <= len(run_ids) <= MAX_RUNS:
        return empty, gr.update(choices=[], value=None), ""
    ids = [int(r) for r in run_ids]
    try:
        rows = per_sample(ctx.db(), ids, show or "all", limit=LISTED + 1)
    except IVTError as exc:
        return empty, gr.update(choices=[], value=None), f"**{exc}**"
    frame = pd.DataFrame([{"sample": r["sample_id"], "expression": r["expression"],
                           **{f"run {rid} {k}": round(r[f"{k} {rid}"], 3) for rid in ids for k in ("step0", "final")},
                           **{f"run {rid} final delta": f"{r[f'delta {rid}']:+.3f}" for rid in ids[1:]}}
                          for r in rows[:LISTED]] or [{"sample": "(none)"}])
    picked = [r["sample_id"] for r in rows[:LISTED]]
    more = f" (the first {LISTED} listed)" if len(rows) > LISTED else ""
    line = f"{len(rows[:LISTED]):,} samples{more}: {show}, largest difference in final IoU against run {ids[0]} first."
    return frame, gr.update(choices=picked, value=picked[0] if picked else None), line


def trajectories(ctx: AppContext, run_ids, sample_id, step, history, truth):
    """Each run's box at the shared step (a shorter trajectory shows its last step), the caption under each, and
    the sample's IoU curves overlaid. Outputs: MAX_RUNS columns (unused ones hidden), images, captions, the curve
    and the slider's range."""
    hide = [gr.update(visible=False)] * MAX_RUNS
    keep = [gr.update()] * (2 * MAX_RUNS)
    if not run_ids or not 2 <= len(run_ids) <= MAX_RUNS or not sample_id:
        return *hide, *keep, None, gr.update()
    ids = [int(r) for r in run_ids]
    try:
        views = side_by_side(ctx.workspace, ctx.db(), ids, sample_id, int(step or 0), history, truth)
    except IVTError as exc:
        shown = [gr.update(visible=True), *hide[1:]]
        return *shown, gr.update(value=None), *keep[1:MAX_RUNS], f"**{exc}**", *keep[MAX_RUNS + 1:], None, gr.update()
    images, captions = [], []
    fig = go.Figure()
    for image, info in views:
        scale = DISPLAY_SIDE / max(image.size)
        if scale > 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
        images.append(gr.update(value=image, label=f"run {info['run_id']} at step {info['shown_step']}"))
        stopped = (f" (stopped at step {info['shown_step']})" if info["shown_step"] < info["asked_step"] else "")
        box = "no readable box" if info["box"] is None else "[" + ", ".join(f"{v:.0f}" for v in info["box"]) + "]"
        unreadable = "" if info["parse_ok"] else f" · unreadable: {info['parse_failure']}"
        captions.append(f"**run {info['run_id']}** · step {info['shown_step']}{stopped} · IoU **{info['iou']:.3f}**"
                        f" · box {box}{unreadable}\n\n**Reasoning:** {info['reasoning'] or '(none)'}")
        fig.add_trace(go.Scatter(x=list(range(len(info["ious"]))), y=info["ious"], mode="lines+markers",
                                 name=f"run {info['run_id']}"))
    fig.add_vline(x=int(step or 0), line_dash="dot")
    fig.update_layout(title=f"{views[0][1]['expression']}: IoU per step", yaxis_range=[0, 1], xaxis={"dtick": 1},
                      height=280, margin={"t": 40, "b": 30})
    longest = max(len(info["ious"]) for _, info in views)
    unused = MAX_RUNS - len(views)
    columns = [gr.update(visible=True)] * len(views) + [gr.update(visible=False)] * unused
    return (*columns, *images, *[gr.update()] * unused, *captions, *[""] * unused, fig,
            gr.update(maximum=max(1, longest - 1)))


def ordered(run_ids, baseline) -> list[int]:
    """The selected runs with the baseline first (the deltas, wins and losses are against it)."""
    run_ids = [int(r) for r in run_ids or []]
    if baseline is not None and int(baseline) in run_ids:
        return [int(baseline), *[r for r in run_ids if r != int(baseline)]]
    return run_ids


def sampled_choices(ctx: AppContext) -> list[tuple[str, int]]:
    """The sampled single-shot runs (best-of-K candidates), labelled as the run pickers label runs."""
    sampled = {r["id"] for r in list_runs(ctx.db()) if sampled_single_shot(r)}
    return [(label, rid) for label, rid in run_choices(ctx) if rid in sampled]


def comparable_runs(ctx: AppContext) -> list[int]:
    """The runs Compare opens on: the newest finished run and the newest others on the same dataset split with as
    many samples, up to three, the newest run of each other model first (a fresh workspace: base, SFT and GRPO toys
    on 100 val samples, not the SFT toy's two runs; its single shot on train shares no samples with them; a model
    just trained and its parent, not an older run on fewer samples); the two newest runs when no pair shares a
    split. Oldest first (the baseline)."""
    runs = [r for r in list_runs(ctx.db()) if r["status"] == "done"] or list_runs(ctx.db())

    def kind(run: dict) -> tuple:
        return run["dataset"], run["split"], run["n_samples"]

    for newest in runs:
        same = [r for r in runs if r["id"] != newest["id"] and kind(r) == kind(newest)]
        models, others = {newest["model_id"]}, []
        for run in same:  # the newest run of each other model first
            if run["model_id"] not in models:
                models.add(run["model_id"])
                others.append(run["id"])
        others = [*others, *(r["id"] for r in same if r["id"] not in others)][:MAX_RUNS - 1]
        if others:
            return sorted([newest["id"], *others])
    return sorted(r["id"] for r in runs[:2])


def baseline_choices(ctx: AppContext, run_ids, current=None) -> dict:
    """The baseline picker: one of the selected runs (kept if still selected, else the oldest)."""
    labels = dict((value, label) for label, value in run_choices(ctx))
    run_ids = sorted(int(r) for r in run_ids or [])
    value = int(current) if current is not None and int(current) in run_ids else (run_ids[0] if run_ids else None)
    return gr.update(choices=[(labels.get(r, f"run {r}"), r) for r in run_ids], value=value)


def build(ctx: AppContext) -> list:
    choices = run_choices(ctx)
    runs = gr.Dropdown(choices=choices, multiselect=True, max_choices=MAX_RUNS, label="Runs to compare (2 or 3)",
                       value=comparable_runs(ctx) if len(choices) >= 2 else None)
    baseline = gr.Dropdown(label="Baseline (deltas, wins and losses are against it)", elem_id="compare-baseline")
    note = gr.Markdown()
    table = gr.Dataframe(label="Numbers (delta against the baseline)", interactive=False)
    with gr.Row():
        pairs = gr.Dataframe(label="Per-sample wins / losses", interactive=False)
        curve = gr.Plot()
    refresh = gr.Button("Refresh runs")
    with gr.Accordion("The paper's table: single shot, naive IVT, each model + IVT (baseline = the base model's run)",
                      open=False):
        candidates = gr.Dropdown(choices=sampled_choices(ctx), multiselect=True, elem_id="compare-best-of",
                                 label="Best-of-K candidates: sampled single-shot runs of the base model (ivt eval "
                                       "--steps 0 --temperature 0.7 --seed N); other runs are left out")
        paper_button = gr.Button("Make the paper's table of these runs", elem_id="compare-paper")
        paper = gr.Dataframe(interactive=False, elem_id="compare-paper-table")
        paper_note = gr.Markdown()
    gr.Markdown("### Sample by sample\nPick a sample from the list (or click a row); the step slider (arrow keys "
                "work on it) moves every run's trajectory together.")
    with gr.Row():
        show = gr.Dropdown(list(SHOWS), value="all", label="Samples (against the baseline)")
        sample = gr.Dropdown(label="Sample", choices=[])
        step = gr.Slider(0, 2, value=0, step=1, label="Step (shared)", elem_id="compare-step")
        with gr.Column(min_width=160):
            history = gr.Checkbox(label="Show earlier boxes")
            truth = gr.Checkbox(value=True, label="Show ground truth (green)")
    listed = gr.Markdown(elem_id="compare-listed")
    samples = gr.Dataframe(interactive=False, max_height=240)
    with gr.Row():
        slots = []
        for _ in range(MAX_RUNS):
            with gr.Column(visible=False) as column:
                slots.append((column, gr.Image(type="pil", format="png", height=360), gr.Markdown()))
    sample_curve = gr.Plot()

    listing = [samples, sample, listed]
    view_inputs = [runs, baseline, sample, step, history, truth]
    view_outputs = [*[c for c, _, _ in slots], *[i for _, i, _ in slots], *[t for _, _, t in slots],
                    sample_curve, step]

    def recompare(r, b, s):
        return (*compare_view(ctx, ordered(r, b)), *sample_frame(ctx, ordered(r, b), s))

    # .input, not .change: the page's first view sets the runs, their baseline and the comparison in one go; a
    # change event would redo all of it once more behind a busy baseline picker
    runs.input(lambda r, b: baseline_choices(ctx, r, b), [runs, baseline], baseline).then(
        recompare, [runs, baseline, show], [table, pairs, curve, note, *listing])
    baseline.input(recompare, [runs, baseline, show], [table, pairs, curve, note, *listing])
    show.change(lambda r, b, s: sample_frame(ctx, ordered(r, b), s), [runs, baseline, show], listing)
    sample.change(lambda r, b, s, _, h, t: trajectories(ctx, ordered(r, b), s, 0, h, t), view_inputs,
                  view_outputs).then(lambda: 0, None, step)
    for trigger in (step.change, history.change, truth.change):
        trigger(lambda r, b, *a: trajectories(ctx, ordered(r, b), *a), view_inputs, view_outputs,
                show_progress="hidden")

    def pick(frame: pd.DataFrame, evt: gr.SelectData):
        return frame.iloc[evt.index[0]]["sample"] if evt.index is not None and "sample" in frame else gr.update()

    samples.select(pick, samples, sample)
    paper_button.click(lambda r, b, c: paper_view(ctx, ordered(r, b), c), [runs, baseline, candidates],
                       [paper, paper_note])
    refresh.click(lambda: (gr.update(choices=run_choices(ctx)), gr.update(choices=sampled_choices(ctx))), None,
                  [runs, candidates])

    def first_view(_current):
        """Runs listed afresh at page load; the newest (up to three) on one split are compared, the oldest as the
        baseline (the deltas read as what the newer runs changed, e.g. fine-tuned models against their base)."""
        choices = run_choices(ctx)
        chosen = comparable_runs(ctx)
        return (gr.update(choices=choices, value=chosen), baseline_choices(ctx, chosen), *compare_view(ctx, chosen),
                *sample_frame(ctx, chosen, "all"), gr.update(choices=sampled_choices(ctx)))

    return [(first_view, [runs], [runs, baseline, table, pairs, curve, note, *listing, candidates])]
