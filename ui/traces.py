"""Traces: the review queue. Approve / edit (text and box) / reject with the keyboard, history, bulk, export,
and synthesis of new traces from a run as a background job."""

from __future__ import annotations

import functools
import shlex
import time
from datetime import datetime

import gradio as gr
import pandas as pd
from PIL import Image

from ivt_core import jobs
from ivt_core.config.synthesis import SynthConfig
from ivt_core.errors import IVTError
from ivt_core.review import check_box, history_rows, next_trace, queue_filters, trace_view
from ivt_core.store.traces import STATUSES, count_traces, get_trace, matching_ids
from ivt_core.trace_export import STYLES, export_traces
from ivt_core.traces import approve, bulk, edit_box, edit_reasoning, reject, restore_statuses
from ui.choices import run_choices
from ui.config_form import config_fields, config_from_form
from ui.context import AppContext

DISPLAY_SIDE = 448
PAST = {"approve": "approved", "reject": "rejected"}
SHORTCUTS = ("**Keys** (outside text fields): **a** approve (saves edits first) · **r** reject · **s** save edits · "
             "**j** next · **k** previous. In the reasoning box, **Ctrl+Enter** saves. Click the image twice to "
             "draw the target box (first click: one corner, second click: the opposite corner), or drag across it.")


def reviewer(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "web") if request else "web"


def counts_text(ctx: AppContext, filters: dict) -> str:
    counts = count_traces(ctx.db(), **{k: v for k, v in filters.items() if k != "status"})
    return " · ".join(f"**{name}** {counts[name]:,}" for name in STATUSES) + f" · total {sum(counts.values()):,}"


HISTORY_COLUMNS = ["version", "when", "reviewer", "action", "change"]
EMPTY = (None, "No trace matches the filter. Synthesize traces from a run below, or change the filter.", "",
         None, None, None, None, "", pd.DataFrame(columns=HISTORY_COLUMNS), None, gr.update(choices=[1], value=1))


def show(ctx: AppContext, trace_id: int | None, step: int, box: list | None = None, note: str = ""):
    """Everything the page shows for one trace at one step (the 11 outputs of ``views``)."""
    if trace_id is None:
        return EMPTY
    db = ctx.db()
    trace = get_trace(db, trace_id)
    step = min(max(1, int(step or 1)), len(trace["steps"]))
    image, info = trace_view(ctx.workspace, db, trace, step, box)
    scale = max(1.0, DISPLAY_SIDE / max(image.size))
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    header = (f"### Trace {trace['id']} · {trace['status']} · version {trace['version']}\n"
              f"**{info['expression']}** · `{info['sample_id']}` · {trace['kind']} trace by {trace['teacher']} · "
              f"student IoU **{trace['student_iou']:.3f}** (red) · ground truth green, target blue"
              + (f"\n\n{note}" if note else ""))
    x1, y1, x2, y2 = info["target"]
    state = {"id": trace["id"], "version": trace["version"], "step": step, "scale": scale, "corner": None,
             "size": info["size"]}
    return (image, header, trace["steps"][step - 1]["reasoning"], x1, y1, x2, y2, live_text(info),
            pd.DataFrame(history_rows(db, trace["id"]), columns=HISTORY_COLUMNS), state,
            gr.update(choices=list(range(1, len(trace["steps"]) + 1)), value=step))


def live_text(info: dict) -> str:
    edited = " (edited, not saved)" if info["edited"] else ""
    return f"target box IoU with ground truth: **{info['target_iou']:.3f}**{edited}"


CONFIRM_S = 30.0  # a bulk action is confirmed by a second click within this time


def build(ctx: AppContext) -> list:
    gr.Markdown(SHORTCUTS)
    counts = gr.Markdown(elem_id="trace-counts")
    with gr.Row():
        status = gr.Dropdown(["pending", *[s for s in STATUSES if s != "pending"], "all"], value="pending",
                             label="Status")
        kind = gr.Dropdown(["all", "corrective", "keep"], value="all", label="Kind")
        iou_min = gr.Slider(0, 1, value=0, step=0.05, label="Student IoU from")
        iou_max = gr.Slider(0, 1, value=1, step=0.05, label="Student IoU to")
        search = gr.Textbox(label="Search expression and reasoning", placeholder="words, then Enter")
    state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(type="pil", format="png", label="Drag (or click two corners) to draw the target box",
                             interactive=False, height=460, elem_id="trace-image")
            dragged_box = gr.Textbox(visible="hidden", elem_id="trace-drag")  # written by ui.box_drag's script
        with gr.Column(scale=1):
            header = gr.Markdown(elem_id="trace-header")
            step = gr.Radio([1], value=1, label="Corrective step")
            reasoning = gr.Textbox(label="Reasoning", lines=4, elem_id="trace-reasoning")
            with gr.Row():
                x1, y1, x2, y2 = (gr.Number(label=f"{n} (px)", precision=1, min_width=80)
                                  for n in ("x1", "y1", "x2", "y2"))
            live = gr.Markdown()
            message = gr.Markdown(elem_id="trace-message")
            with gr.Row():
                approve_btn = gr.Button("Approve [a]", variant="primary", elem_id="trace-approve")
                save_btn = gr.Button("Save edits [s]", elem_id="trace-save")
                reject_btn = gr.Button("Reject [r]", variant="stop", elem_id="trace-reject")
            with gr.Row():
                prev_btn = gr.Button("Previous [k]", elem_id="trace-prev")
                next_btn = gr.Button("Next [j]", elem_id="trace-next")
    history = gr.Dataframe(label="Revision history", interactive=False, wrap=True)
    with gr.Accordion("Bulk actions over the filter", open=False):
        gr.Markdown("Applies to every trace the filter above matches (at its current version).")
        with gr.Row():
            bulk_approve = gr.Button("Approve all matching", elem_id="bulk-approve")
            bulk_reject = gr.Button("Reject all matching", elem_id="bulk-reject")
            bulk_undo = gr.Button("Undo the last bulk action", elem_id="bulk-undo")
        bulk_state = gr.State(None)
    with gr.Accordion("Export", open=False):
        with gr.Row():
            export_status = gr.Dropdown(list(STATUSES), value="approved", label="Traces with status")
            export_style = gr.Dropdown(list(STYLES), value="trl", label="Format")
            export_btn = gr.Button("Export JSONL")
        export_file = gr.File(label="Exported file", interactive=False)
        export_note = gr.Markdown()
    with gr.Accordion("Synthesize traces from a run (background job)", open=False):
        choices = run_choices(ctx)
        with gr.Row():
            synth_run = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Run")
            synth_settings = config_fields(SynthConfig)  # the CLI's defaults and limits
        synth_btn = gr.Button("Start synthesis job")
        synth_note = gr.Markdown()

    filter_inputs = [status, kind, search, iou_min, iou_max]
    views = [image, header, reasoning, x1, y1, x2, y2, live, history, state, step]

    def first(*form):
        filters = queue_filters(*form)
        found = next_trace(ctx.db(), None, filters)
        return (*show(ctx, found and found["id"], 1), counts_text(ctx, filters), "")

    def move(backwards, st, text, a, b, c, d, *form, request: gr.Request = None):
        """Next or previous trace; an unsaved edit of this one is saved first (never dropped without a word)."""
        filters = queue_filters(*form)
        note = ""
        if st:
            try:
                before = st["version"]
                version = save_edits(st, text or "", a, b, c, d, reviewer(request))
                if version != before:
                    note = f"Saved your edit of trace {st['id']} (version {version}) before moving."
            except IVTError as exc:
                return (*[gr.update()] * len(views), counts_text(ctx, filters),
                        f"**Not moved:** your edit of trace {st['id']} cannot be saved: {exc}. Fix it, or reload "
                        "the trace to drop it.")
        found = next_trace(ctx.db(), st and st["id"], filters, backwards)
        return (*show(ctx, found and found["id"], 1), counts_text(ctx, filters), note)

    def preview(st, a, b, c, d):
        if not st:
            return gr.update(), ""
        try:
            box = check_box([a, b, c, d], *st["size"])
        except IVTError as exc:
            return gr.update(), f"**{exc}**"
        trace = get_trace(ctx.db(), st["id"])
        shown, info = trace_view(ctx.workspace, ctx.db(), trace, st["step"], box)
        if st["scale"] > 1:
            shown = shown.resize((round(shown.width * st["scale"]), round(shown.height * st["scale"])), Image.NEAREST)
        return shown, live_text(info)

    def save_edits(st, text, a, b, c, d, who):
        """Write the step's changed text and box; returns the new version. Raises IVTError."""
        trace = get_trace(ctx.db(), st["id"])
        version = st["version"]
        stored = trace["steps"][st["step"] - 1]
        if text.strip() != stored["reasoning"]:
            version = edit_reasoning(ctx.db(), st["id"], version, st["step"], text, who)
        box = check_box([a, b, c, d], *st["size"])
        if [round(v, 1) for v in box.to_xyxy()] != [round(v, 1) for v in stored["box"]]:
            version = edit_box(ctx.db(), st["id"], version, st["step"], box.to_xyxy(), who)
        return version

    def act(action, st, text, a, b, c, d, st_f, kd, sr, lo, hi, request: gr.Request = None):
        filters = queue_filters(st_f, kd, sr, lo, hi)
        if not st:
            return (*[gr.update()] * len(views), counts_text(ctx, filters), "Nothing to review.")
        who = reviewer(request)
        try:
            version = save_edits(st, text, a, b, c, d, who)
            if action == "save":
                return (*show(ctx, st["id"], st["step"]), counts_text(ctx, filters), f"Saved (version {version}).")
            (approve if action == "approve" else reject)(ctx.db(), st["id"], version, who)
        except IVTError as exc:
            return (*[gr.update()] * len(views), counts_text(ctx, filters), f"**{exc}**")
        done = f"Trace {st['id']} {PAST[action]}."
        found = next_trace(ctx.db(), st["id"], filters)
        return (*show(ctx, found and found["id"], 1), counts_text(ctx, filters), done)

    def click(st, evt: gr.SelectData):
        if not st or evt.index is None:
            return st, *[gr.update()] * 4, ""
        x, y = (round(v / st["scale"], 1) for v in evt.index)
        if st["corner"] is None:
            note = f"First corner at ({x:g}, {y:g}); click the opposite one."
            return {**st, "corner": [x, y]}, *[gr.update()] * 4, note
        (cx, cy) = st["corner"]
        return ({**st, "corner": None}, min(cx, x), min(cy, y), max(cx, x), max(cy, y), "")

    def dragged(st, text):
        """The box ui.box_drag's script wrote ("x1 y1 x2 y2 n", pixels of the image as shown), in image pixels."""
        try:
            values = [float(v) for v in (text or "").split()[:4]]
        except ValueError:
            values = []
        if not st or len(values) != 4:
            return [gr.update()] * 4
        w, h = st["size"]
        x1, y1, x2, y2 = (round(v / st["scale"], 1) for v in values)
        return min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)

    def run_bulk(action, pending, st_f, kd, sr, lo, hi, request: gr.Request = None,
                 progress=gr.Progress()):  # noqa: B008 - Gradio's way
        """First click: say how many traces the action touches and ask again; second click: do it, keeping what
        changed so that it can be undone."""
        filters = queue_filters(st_f, kd, sr, lo, hi)
        ids = matching_ids(ctx.db(), **filters)
        asked = pending and pending.get("ask") == action and pending.get("ids") == ids and \
            time.monotonic() - pending["at"] < CONFIRM_S
        if not asked:
            note = (f"**{action.capitalize()} {len(ids):,} traces** matching the filter? Click "
                    f"\"{action.capitalize()} all matching\" again within {CONFIRM_S:.0f} s to confirm.") if ids else \
                "No trace matches the filter."
            return ({"ask": action, "ids": ids, "at": time.monotonic()} if ids else None,
                    *[gr.update()] * len(views), counts_text(ctx, filters), note)
        before = {i: get_trace(ctx.db(), i)["status"] for i in ids}
        done, conflicts = 0, []
        for start in progress.tqdm(range(0, len(ids), 200), desc=f"{action} traces"):
            result = bulk(ctx.db(), ids[start:start + 200], action, reviewer(request))
            done, conflicts = done + result["done"], conflicts + result["conflicts"]
        changed = {i: {"status": before[i], "version": get_trace(ctx.db(), i)["version"]} for i in ids
                   if i not in conflicts}
        note = f"{PAST[action].capitalize()} {done:,} traces (Undo puts them back)"
        if conflicts:
            note += f"; {len(conflicts)} changed meanwhile, left as they are"
        found = next_trace(ctx.db(), None, filters)
        return ({"undo": changed}, *show(ctx, found and found["id"], 1), counts_text(ctx, filters), note)

    def undo_bulk(pending, st_f, kd, sr, lo, hi, request: gr.Request = None):
        filters = queue_filters(st_f, kd, sr, lo, hi)
        changed = (pending or {}).get("undo")
        if not changed:
            return (pending, *[gr.update()] * len(views), counts_text(ctx, filters), "No bulk action to undo.")
        restored, skipped = restore_statuses(ctx.db(), changed, reviewer(request))
        note = f"Undone: {restored:,} traces back to their earlier status" + (
            f"; {skipped} changed since and were left alone" if skipped else "") + "."
        found = next_trace(ctx.db(), None, filters)
        return (None, *show(ctx, found and found["id"], 1), counts_text(ctx, filters), note)

    def export(st, style):
        out = ctx.workspace.root / "exports" / f"traces-{st}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
        try:
            n = export_traces(ctx.workspace, out, status=st, style=style)
        except IVTError as exc:
            return None, f"**{exc}**"
        return str(out), f"{n:,} {st} traces written to `{out}`."

    def synth(run_id, *values):
        if not run_id:
            return "Pick a run first (Explore starts evaluations)."
        try:
            config = config_from_form(SynthConfig, dict(zip(synth_settings, values, strict=True)), run=int(run_id))
            job_id = jobs.submit(ctx.workspace, "synth", config)
        except IVTError as exc:
            return f"**{exc}**"
        return (f"Started job {job_id} (`{shlex.join(jobs.shown_command('synth', config))}`); its progress is in "
                "the Train tab's jobs list. Refresh the queue when it ends.")

    outputs = [*views, counts, message]
    for trigger in (status.change, kind.change, search.submit, iou_min.release, iou_max.release):
        trigger(first, filter_inputs, outputs)
    # review actions are short store reads and writes: they skip the queue (one round trip less per key press)
    edit_inputs = [state, reasoning, x1, y1, x2, y2, *filter_inputs]
    next_btn.click(functools.partial(move, False), edit_inputs, outputs, queue=False)
    prev_btn.click(functools.partial(move, True), edit_inputs, outputs, queue=False)
    for button, action in ((approve_btn, "approve"), (reject_btn, "reject"), (save_btn, "save")):
        button.click(functools.partial(act, action), edit_inputs, outputs, queue=False)
    step.input(lambda st, s: show(ctx, st and st["id"], s), [state, step], views)
    for field in (x1, y1, x2, y2):
        field.input(preview, [state, x1, y1, x2, y2], [image, live], show_progress="hidden")
    image.select(click, state, [state, x1, y1, x2, y2, message]).then(
        preview, [state, x1, y1, x2, y2], [image, live], show_progress="hidden")
    dragged_box.change(dragged, [state, dragged_box], [x1, y1, x2, y2], show_progress="hidden").then(
        preview, [state, x1, y1, x2, y2], [image, live], show_progress="hidden")
    bulk_approve.click(functools.partial(run_bulk, "approve"), [bulk_state, *filter_inputs], [bulk_state, *outputs])
    bulk_reject.click(functools.partial(run_bulk, "reject"), [bulk_state, *filter_inputs], [bulk_state, *outputs])
    bulk_undo.click(undo_bulk, [bulk_state, *filter_inputs], [bulk_state, *outputs])
    export_btn.click(export, [export_status, export_style], [export_file, export_note])
    synth_btn.click(synth, [synth_run, *synth_settings.values()], synth_note)

    def synth_runs():
        """The runs to synthesize from, listed afresh at page load (newest first, as at the app's start)."""
        choices = run_choices(ctx)
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    def save_on_leave(st, text, a, b, c, d, request: gr.Request = None):
        """Leaving the tab saves an unsaved edit of the trace on screen (or says why it cannot)."""
        if not st:
            return gr.update(), gr.update()
        try:
            version = save_edits(st, text or "", a, b, c, d, reviewer(request))
        except IVTError as exc:
            return gr.update(), f"**Your edit of trace {st['id']} is not saved:** {exc}."
        if version == st["version"]:
            return gr.update(), gr.update()
        return {**st, "version": version}, f"Saved your edit of trace {st['id']} (version {version}) as you left."

    leave = (save_on_leave, [state, reasoning, x1, y1, x2, y2], [state, message])
    return [(first, filter_inputs, outputs), (synth_runs, [], [synth_run])], leave
