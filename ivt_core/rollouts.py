"""GRPO rollouts as people look at them: the trainer writes, per step, its first prompt's group of G sampled
trajectories to ``OUT/rollouts.jsonl`` (boxes per step, IoUs, answers, reward, advantage); ``rollout_views``
draws one step's group for the Train tab's rollout viewer (what trackio and TRL show as GRPO tables)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ivt_core.boxes import Box
from ivt_core.data.sample import load_image
from ivt_core.errors import IVTError
from ivt_core.render import RenderStyle, render_box
from ivt_core.workspace import Workspace

VIEW = RenderStyle(history=True, ground_truth=True, label="last")


def rollout_steps(out: str | Path) -> list[dict]:
    """Every step's record of a GRPO run's output folder ([] before the first step)."""
    path = Path(out) / "rollouts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rollout_views(workspace: Workspace, record: dict) -> list[tuple[Image.Image, str]]:
    """One image per rollout: its boxes step by step (numbered, the last in full), the ground truth in green,
    and a caption with reward, advantage and IoU by step."""
    try:
        image = load_image(workspace.resolve(record["image_path"]))
    except IVTError:
        return []
    views = []
    for index, rollout in enumerate(record["rollouts"]):
        boxes = [Box(*b) if b else None for b in rollout["boxes"]]
        drawn = render_box(image, boxes[-1] if boxes else None, VIEW, history=boxes[:-1],
                           ground_truth=Box(*record["ground_truth"]))
        ious = " -> ".join(f"{v:.2f}" for v in rollout["ious"])
        views.append((drawn, f"#{index} reward {rollout['reward']:.2f} · advantage {rollout['advantage']:+.2f} · "
                             f"IoU {ious}"))
    return views
