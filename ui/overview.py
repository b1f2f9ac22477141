"""The overview page: what the workspace holds (datasets, runs with honest numbers) and a sample browser."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from ivt_core import jobs as ivt_jobs
from ivt_core.data.sample import load_image
from ivt_core.errors import IVTError
from ivt_core.render import RenderStyle, render_box
from ivt_core.store.jobs import get_job
from ivt_core.store.models import get_model, list_models, model_names, weights_changed
from ivt_core.store.runs import list_runs
from ivt_core.store.samples import get_samples, list_datasets
from ui.choices import model_choices, parse_split_choice, refreshed, split_choices
from ui.context import AppContext
from ui.train import jobs_frame

GT_STYLE = RenderStyle(ground_truth=True)
DISPLAY_SIDE = 448
PEFT_TEMPLATE = "# Model Card for Model ID"  # the untouched title of the template card peft writes
CARD_CHARS = 100_000  # of a model card shown (a card is a few KB; a huge README is cut, with a note)


def datasets_frame(ctx: AppContext) -> pd.DataFrame:
    rows = [{"dataset": d["name"], "kind": d["kind"],
             **{f"{split}": n for split, n in sorted(d["splits"].items())}} for d in list_datasets(ctx.db())]
    return pd.DataFrame(rows or [{"dataset": "(none yet)"}])


def _short(paths: str) -> str:
    """Paths as their last two parts (a GRPO model lists its SFT and GRPO adapters): readable in a table."""
    return ", ".join("/".join(Path(p).parts[-2:]) for p in (paths or "").split(",") if p)


def models_frame(ctx: AppContext) -> pd.DataFrame:
    models = list_models(ctx.db())
    names = {m["id"]: m["name"] for m in models}
    rows = [{"model": m["id"], "name": m["name"], "adapter": _short(m["adapter_path"]) or "-",
             "parent": names.get(m["parent_id"], "-"), "family": m["family"], "path": _short(m["base_path"])}
            for m in models]
    return pd.DataFrame(rows or [{"model": "(none registered)"}])


def model_card(ctx: AppContext, model_id) -> str:
    """The model's card: ``README.md`` in the model's own folder (its last adapter's, or its checkpoint's when it
    has no adapter; never a parent's, which describes another model), as Markdown. Without one: where the model
    came from (the job that made it and its command, its parent)."""
    if model_id is None:
        return "No models registered yet: `ivt eval --model PATH ...` registers one, and so does training one (Train)."
    try:
        row = get_model(ctx.db(), int(model_id))
    except IVTError as exc:
        return str(exc)
    adapters = [p for p in (row["adapter_path"] or "").split(",") if p]
    folder = Path(adapters[-1] if adapters else row["base_path"])
    changed = weights_changed(ctx.db(), row["id"])
    if changed:  # the card in the folder describes the weights there now, not this model's
        return _no_autolinks(f"**{row['name']}**: {changed}; the model card in `{folder}` describes those, so it "
                             "is not shown here.\n\n" + _runs_of(ctx, row))
    card = folder / "README.md"
    text = None
    if card.is_file():
        try:
            text = card.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"The model card `{card}` cannot be read ({exc.strerror or exc}); check its permissions."
    if text is not None and PEFT_TEMPLATE in text:  # peft's empty template (adapters trained before the
        text, card = None, None                      # trainers wrote their own card): nothing to show
    if text is not None:
        if len(text) > CARD_CHARS:
            text = text[:CARD_CHARS] + f"\n\n*(cut at {CARD_CHARS:,} characters: the whole card is `{card}`)*"
        return _no_autolinks(text.rstrip() + "\n\n" + _runs_of(ctx, row))
    lines = [f"**{row['name']}**: no model card (`README.md`) in `{folder}`" +
             (" (only peft's empty template)." if card is None else ".")]
    if row["origin_job"]:
        try:
            job = get_job(ctx.db(), row["origin_job"])
            lines.append(f"Made by job {job['id']} ({job['kind']}, {job['status']}): `{' '.join(job['argv'])}`")
        except IVTError:
            lines.append(f"Made by job {row['origin_job']} (no longer in this workspace).")
    if row["parent_id"]:
        lines.append(f"Trained from model {row['parent_id']}.")
    return _no_autolinks("  \n".join(lines) + "\n\n" + _runs_of(ctx, row))


def _runs_of(ctx: AppContext, row: dict) -> str:
    """The model's runs in this workspace, as a Markdown table of Acc@0.5 (the card's numbers, as of now)."""
    runs = [r for r in list_runs(ctx.db()) if r["model_id"] == row["id"]]
    if not runs:
        return f"*No runs of {row['name']} in this workspace yet.*"
    lines = [f"### Runs of {row['name']} in this workspace (Acc@0.5; oracle* picks the best step with ground truth)",
             "", "| run | data | T | samples | status | step 0 | final | oracle* |", "|---" * 8 + "|"]
    for run in runs:
        m = run["metrics"] or {}
        acc = [f"{m[key]['acc@0.5']:.3f}" if m.get(key) else "-" for key in ("step0", "final", "oracle")]
        lines.append(f"| {run['id']} | {run['dataset']}/{run['split']} | {run['steps']} | {run['n_samples']} | "
                     f"{run['status']} | {' | '.join(acc)} |")
    return "\n".join(lines)


def _no_autolinks(markdown: str) -> str:
    """``Acc@0.5`` as text: the page's Markdown renderer links anything shaped like an e-mail address. The "@"
    becomes its HTML entity outside code (in code it would show as typed)."""
    parts = markdown.split("`")
    return "`".join(part.replace("@", "&#64;") if i % 2 == 0 else part for i, part in enumerate(parts))


def runs_frame(ctx: AppContext) -> pd.DataFrame:
    rows = []
    names = model_names(ctx.db())
    for run in list_runs(ctx.db()):
        m = run["metrics"] or {}
        row = {"run": run["id"], "model": names.get(run["model_id"], "?"), "data": f"{run['dataset']}/{run['split']}",
               "T": run["steps"], "policy": run["policy"], "n": run["n_samples"], "status": run["status"],
               "finished": (run["finished_at"] or "")[5:16].replace("T", " ")}
        if m:  # Acc@0.5 throughout (said in the table's label), so that every column fits
            row.update({"step 0": round(m["step0"]["acc@0.5"], 3), "final": round(m["final"]["acc@0.5"], 3),
                        **{p: round(v["acc@0.5"], 3) for p, v in m["policies"].items() if p != "fixed"},
                        "oracle*": round(m["oracle"]["acc@0.5"], 3),
                        "unparsable": round(m["parse_failure_rate"], 3)})
        rows.append(row)
    return pd.DataFrame(rows or [{"run": "(no runs yet: `ivt eval ...`)"}])


def show_sample(ctx: AppContext, choice: str | None, index: float):
    if not choice:
        return None, "No dataset yet."
    dataset, split = parse_split_choice(choice)
    size = next((d["splits"].get(split, 0) for d in list_datasets(ctx.db()) if d["name"] == dataset), 0)
    (sample,) = get_samples(ctx.db(), dataset, split, limit=1, offset=int(index) % max(1, size))
    try:
        image = load_image(ctx.workspace.resolve(sample.image_path))
    except IVTError as exc:  # a moved or broken image: say so where the picture would be
        return None, f"`{sample.id}`: {exc}"
    shown = render_box(image, None, GT_STYLE, ground_truth=sample.bbox)
    scale = DISPLAY_SIDE / max(shown.size)
    if scale > 1:  # small scenes are shown enlarged, pixels kept sharp
        shown = shown.resize((round(shown.width * scale), round(shown.height * scale)), Image.NEAREST)
    box = ", ".join(f"{v:.1f}" for v in sample.bbox.to_xyxy())
    return shown, f"**{sample.expression}**  \n`{sample.id}` · ground truth (green) xyxy [{box}]"


def build(ctx: AppContext) -> list:
    gr.Markdown(f"# IVT Studio\nWorkspace `{ctx.workspace.root}`. Every number shows step 0, the final step, "
                "the label-free stopping rules and the oracle best step, which uses ground truth.")
    with gr.Row():
        datasets = gr.Dataframe(value=lambda: datasets_frame(ctx), label="Datasets", interactive=False)
        models = gr.Dataframe(value=lambda: models_frame(ctx), label="Models", interactive=False)
    with gr.Accordion("Model card: how a model was made and what it shows", open=False, elem_id="overview-card"):
        offered = model_choices(ctx)
        pick = gr.Dropdown(choices=offered, value=offered[0][1] if offered else None, label="Model",
                           elem_id="overview-card-model")
        card = gr.Markdown(elem_id="overview-card-text")  # filled at page load (``first_view``)
    pick.input(lambda m: model_card(ctx, m), pick, card)
    runs = gr.Dataframe(value=lambda: runs_frame(ctx), interactive=False, label="Runs (Acc@0.5 at step 0, at the "
                        "final step, under each label-free stopping rule; oracle* picks the best step with ground "
                        "truth)")
    jobs = gr.Dataframe(value=lambda: jobs_frame(ctx), label="Jobs (updated every few seconds)", interactive=False,
                        elem_id="overview-jobs")
    def tick():
        ivt_jobs.start_ready(ctx.workspace, ctx.db())  # a queued job whose awaited job ended without starting it
        return runs_frame(ctx), jobs_frame(ctx)

    gr.Timer(3.0).tick(tick, None, [runs, jobs], show_progress="hidden")
    with gr.Row():
        with gr.Column(scale=1):
            choices = split_choices(ctx)
            split = gr.Dropdown(choices=choices, value=choices[0] if choices else None, label="Split")
            index = gr.Slider(0, 499, value=0, step=1, label="Sample")
            first = choices[0] if choices else None
            caption = gr.Markdown(value=lambda: show_sample(ctx, first, 0)[1])
        with gr.Column(scale=2):
            image = gr.Image(value=lambda: show_sample(ctx, first, 0)[0], label="Sample with its ground-truth box",
                             type="pil", format="png", height=448)
    refresh = gr.Button("Refresh")
    inputs = [split, index]
    for trigger in (split.change, index.change):
        trigger(lambda c, i: show_sample(ctx, c, i), inputs, [image, caption])
    refresh.click(lambda: (datasets_frame(ctx), models_frame(ctx), runs_frame(ctx)), None, [datasets, models, runs])

    def first_view(model_id):
        """The models listed afresh at page load (one trained since the app started is there), and its card."""
        update = refreshed(model_choices(ctx), model_id)
        return update, model_card(ctx, update["value"])

    return [(first_view, [pick], [pick, card])]
