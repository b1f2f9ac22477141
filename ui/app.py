"""Assembling the web app from its tabs. Nothing is built at import time."""

from __future__ import annotations

import gradio as gr

from ui import overview
from ui.context import AppContext


def create_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="IVT Studio") as app:
        overview.build(ctx)
    return app
