"""What every tab offers to pick from, read from the store when it is called (at page load, after a job), so a
model, run, dataset or split made since the app started is there: one helper per kind of choice, for all tabs."""

from __future__ import annotations

import gradio as gr

from ivt_core.store.models import list_models, model_names
from ivt_core.store.runs import list_runs, run_loop_text
from ivt_core.store.samples import list_datasets
from ui.context import AppContext


def refreshed(choices: list, current=None) -> dict:
    """A dropdown update to ``choices`` keeping ``current`` where it is still offered, else the first choice."""
    values = [c[1] if isinstance(c, tuple) else c for c in choices]
    return gr.update(choices=choices, value=current if current in values else (values[0] if values else None))


def split_choices(ctx: AppContext) -> list[str]:
    """Every dataset split as "dataset/split"."""
    return [f"{d['name']}/{split}" for d in list_datasets(ctx.db()) for split in sorted(d["splits"])]


def parse_split_choice(choice: str) -> tuple[str, str]:
    """(dataset, split) of a "dataset/split" choice. The split is after the last "/": workspaces made before names
    were checked may hold a dataset named with one."""
    dataset, _, split = choice.rpartition("/")
    return dataset, split


def model_choices(ctx: AppContext) -> list[tuple[str, int]]:
    """The registered models, labelled with their adapters (a fine-tuned model does not look like its base)."""
    return [(f"{m['id']}: {m['name']}" + (" (adapter)" if m["adapter_path"] else ""), m["id"])
            for m in list_models(ctx.db())]


def run_choices(ctx: AppContext) -> list[tuple[str, int]]:
    """The runs, newest first, labelled with their model."""
    names = model_names(ctx.db())
    return [(f"run {r['id']}: {names.get(r['model_id'], 'model ?')} on {r['dataset']}/{r['split']} {run_loop_text(r)} "
             f"({r['status']}, {r['n_samples']} samples)", r["id"]) for r in list_runs(ctx.db())]
