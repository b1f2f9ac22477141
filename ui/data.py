"""Data: import a dataset from a local path (or an uploaded JSONL), generate shapes-world splits, browse samples."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ivt_core.data.importers import DEFAULT_SPLIT, FORMATS, import_dataset
from ivt_core.data.shapes import SPLITS
from ivt_core.data.shapes_split import write_shapes_split
from ivt_core.errors import InvalidInputError, IVTError
from ivt_core.store.samples import get_samples
from ui.choices import parse_split_choice, refreshed, split_choices
from ui.context import AppContext
from ui.overview import datasets_frame, show_sample

PAGE = 20
MAX_GENERATE = 20_000


def import_from(ctx: AppContext, fmt, path, upload, split, images, name, limit, replace=False,
                progress=gr.Progress()):  # noqa: B008
    source = upload or (path or "").strip()
    if not source:
        return "**Give a path** to the dataset file or folder on this machine (or upload a JSONL file).", gr.update()
    progress(0, desc=f"importing {fmt}")
    try:
        summary = import_dataset(ctx.workspace, fmt, source, split=(split or "").strip() or None,
                                 images=(images or "").strip() or None, limit=int(limit) if limit else None,
                                 name=(name or "").strip() or None, replace=bool(replace))
    except IVTError as exc:
        return f"**Not imported:** {exc}", gr.update()
    reasons = ", ".join(f"{n} {why}" for why, n in summary.reasons.most_common()) or "none"
    return (f"Imported **{summary.imported:,}** of {summary.read:,} samples into `{summary.dataset}/{summary.split}`"
            f" (skipped: {reasons})."), datasets_frame(ctx)


def generate(ctx: AppContext, split, n, seed, progress=gr.Progress()):  # noqa: B008
    try:
        if n is None or not 1 <= int(n) <= MAX_GENERATE:
            raise InvalidInputError(f"the number of scenes must be 1..{MAX_GENERATE:,}")
        total, done = int(n), [0]

        def step(k: int) -> None:
            done[0] += k
            progress((done[0], total), desc=f"drawing {split} scenes")

        written = write_shapes_split(ctx.workspace, split, total, int(seed or 0), progress=step)
    except IVTError as exc:
        return f"**Not generated:** {exc}", gr.update()
    return f"Wrote {written:,} shapes-world scenes into `shapes/{split}`.", datasets_frame(ctx)


def page_frame(ctx: AppContext, choice, page):
    if not choice:
        return pd.DataFrame([{"#": "", "id": "no dataset yet", "expression": "", "size": "", "source": ""}])
    dataset, split = parse_split_choice(choice)
    rows = get_samples(ctx.db(), dataset, split, limit=PAGE, offset=int(page or 0) * PAGE)
    return pd.DataFrame([{"#": int(page or 0) * PAGE + i, "id": s.id, "expression": s.expression,
                          "size": f"{s.width}x{s.height}", "source": s.source} for i, s in enumerate(rows)]
                        or [{"#": "", "id": "no samples on this page", "expression": "", "size": "", "source": ""}])


def build(ctx: AppContext) -> list:
    datasets = gr.Dataframe(value=lambda: datasets_frame(ctx), label="Datasets", interactive=False)
    with gr.Accordion("Import a dataset", open=True):
        with gr.Row():
            fmt = gr.Dropdown(list(FORMATS), value="jsonl", label="Format")
            path = gr.Textbox(label="Path on this machine (file or folder)", elem_id="import-path")
            upload = gr.File(label="... or upload a JSONL file", file_types=[".jsonl"], type="filepath")
        with gr.Row():
            split = gr.Textbox(label="Split (empty: the format's default)")
            images = gr.Textbox(label="Images folder (if the format needs one)")
            name = gr.Textbox(label="Dataset name (empty: the format's)")
            limit = gr.Number(0, label="At most N samples (0: all)", precision=0, minimum=0)
            replace = gr.Checkbox(label="Replace a split the dataset already holds")
        import_btn = gr.Button("Import", variant="primary", elem_id="import-run")
        import_note = gr.Markdown(elem_id="import-note")
    with gr.Accordion("Generate shapes-world scenes", open=False):
        with gr.Row():
            gen_split = gr.Dropdown(list(SPLITS), value="train", label="Split", elem_id="generate-split")
            gen_n = gr.Number(500, label="Scenes", precision=0, minimum=1, maximum=MAX_GENERATE, elem_id="generate-n")
            gen_seed = gr.Number(0, label="Seed", precision=0)
            gen_btn = gr.Button("Generate", elem_id="generate-run")
        gen_note = gr.Markdown(elem_id="generate-note")
    gr.Markdown("### Browse")
    choices = split_choices(ctx)
    with gr.Row():
        browse_split = gr.Dropdown(choices, value=choices[0] if choices else None, label="Split")
        page = gr.Number(0, label="Page (20 per page)", precision=0, minimum=0)
        refresh = gr.Button("Refresh lists")
    with gr.Row():
        table = gr.Dataframe(interactive=False, max_height=420, wrap=True,  # every column visible beside the image
                             column_widths=["7%", "30%", "41%", "11%", "11%"])
        with gr.Column():
            image = gr.Image(type="pil", format="png", label="Selected sample with its ground truth", height=420)
            caption = gr.Markdown()
    fmt.change(lambda f: gr.update(placeholder=f"default: {DEFAULT_SPLIT.get(f, 'train,val,test')}"), fmt, split)
    import_btn.click(lambda *a: import_from(ctx, *a), [fmt, path, upload, split, images, name, limit, replace],
                     [import_note, datasets])
    gen_btn.click(lambda *a: generate(ctx, *a), [gen_split, gen_n, gen_seed], [gen_note, datasets])
    for trigger in (browse_split.change, page.change):
        trigger(lambda c, p: page_frame(ctx, c, p), [browse_split, page], table)

    def pick(choice, frame: pd.DataFrame, evt: gr.SelectData):
        if evt.index is None or "#" not in frame or frame.iloc[evt.index[0]]["#"] == "":
            return gr.update(), gr.update()
        return show_sample(ctx, choice, int(frame.iloc[evt.index[0]]["#"]))

    table.select(pick, [browse_split, table], [image, caption])
    refresh.click(lambda: (gr.update(choices=split_choices(ctx)), datasets_frame(ctx)), None, [browse_split, datasets])

    def first_view(choice):
        splits_now = split_choices(ctx)
        choice = choice if choice in splits_now else (splits_now[0] if splits_now else None)
        return refreshed(splits_now, choice), page_frame(ctx, choice, 0)

    return [(first_view, [browse_split], [browse_split, table])]
