"""Assembling the web app from its tabs. Nothing is built at import time."""

from __future__ import annotations

import gradio as gr

from ui import compare, data, explore, overview, probe, traces, train
from ui.context import AppContext


def create_app(ctx: AppContext) -> gr.Blocks:
    """The app: one tab per module; a tab's build may return (fn, inputs, outputs) to run when a page opens."""
    with gr.Blocks(title="IVT Studio") as app:
        on_load = []
        with gr.Tabs():
            with gr.Tab("Overview"):
                on_load += overview.build(ctx) or []
            with gr.Tab("Explore"):
                on_load += explore.build(ctx) or []
            with gr.Tab("Traces"):
                on_load += traces.build(ctx) or []
            with gr.Tab("Compare"):
                on_load += compare.build(ctx) or []
            with gr.Tab("Train"):
                on_load += train.build(ctx) or []
            with gr.Tab("Data"):
                on_load += data.build(ctx) or []
            with gr.Tab("Probe"):
                on_load += probe.build(ctx) or []
        for fn, inputs, outputs in on_load:
            app.load(fn, inputs, outputs)
    # store reads and timers run side by side; inference events share their own queue (ui.context.INFERENCE)
    app.queue(default_concurrency_limit=8)
    return app
