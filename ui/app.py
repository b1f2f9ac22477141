"""Assembling the web app from its tabs. Nothing is built at import time."""

from __future__ import annotations

import gradio as gr

from ui import compare, data, explore, overview, probe, traces, train
from ui.context import AppContext


def create_app(ctx: AppContext) -> gr.Blocks:
    """The app: one tab per module; a tab's build may return (fn, inputs, outputs) to run when a page opens."""
    with gr.Blocks(title="IVT Studio") as app:
        on_load, others = [], []
        with gr.Tabs():
            with gr.Tab("Overview") as tab:
                on_load += overview.build(ctx) or []
            others.append(tab)
            with gr.Tab("Explore") as tab:
                on_load += explore.build(ctx) or []
            others.append(tab)
            with gr.Tab("Traces"):
                loads, leave_traces = traces.build(ctx)
                on_load += loads
            for module, name in ((compare, "Compare"), (train, "Train"), (data, "Data"), (probe, "Probe")):
                with gr.Tab(name) as tab:
                    on_load += module.build(ctx) or []
                others.append(tab)
        for fn, inputs, outputs in on_load:
            app.load(fn, inputs, outputs)
        for tab in others:  # leaving Traces for any other tab saves an unsaved edit there
            tab.select(*leave_traces, queue=False)
    # store reads and timers run side by side; inference events share their own queue (ui.context.INFERENCE)
    app.queue(default_concurrency_limit=8)
    return app
