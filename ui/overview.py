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
from ivt_core.store.models import list_models
from ivt_core.store.runs import list_runs
from ivt_core.store.samples import get_samples, list_datasets
from ui.choices import parse_split_choice, split_choices
from ui.context import AppContext
from ui.train import jobs_frame

GT_STYLE = RenderStyle(ground_truth=True)
DISPLAY_SIDE = 448


def datasets_frame(ctx: AppContext) -> pd.DataFrame:
    rows = [{"dataset": d["name"], "kind": d["kind"],
             **{f"{split}": n for split, n in sorted(d["splits"].items())}} for d in list_datasets(ctx.db())]
    return pd.DataFrame(rows or [{"dataset": "(none yet)"}])


def _short(paths: str) -> str:
    """Paths as their last two parts (a GRPO model lists its SFT and GRPO adapters): readable in a table."""
    return ", ".join("/".join(Path(p).parts[-2:]) for p in (paths or "").split(",") if p)


def models_frame(ctx: AppContext) -> pd.DataFrame:
    names = {m["id"]: m["name"] for m in list_models(ctx.db())}
    rows = [{"model": m["id"], "name": m["name"], "adapter": _short(m["adapter_path"]) or "-",
             "parent": names.get(m["parent_id"], "-"), "family": m["family"], "path": _short(m["base_path"])}
            for m in list_models(ctx.db())]
    return pd.DataFrame(rows or [{"model": "(none registered)"}])


def runs_frame(ctx: AppContext) -> pd.DataFrame:
    rows = []
    names = {m["id"]: m["name"] for m in list_models(ctx.db())}
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


def build(ctx: AppContext) -> None:
    gr.Markdown(f"# IVT Studio\nWorkspace `{ctx.workspace.root}`. Every number shows step 0, the final step, "
                "the label-free stopping rules and the oracle best step, which uses ground truth.")
    with gr.Row():
        datasets = gr.Dataframe(value=lambda: datasets_frame(ctx), label="Datasets", interactive=False)
        models = gr.Dataframe(value=lambda: models_frame(ctx), label="Models", interactive=False)
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
