"""The starting model's own step-0 answers on fresh scenes (its errors, and its right boxes), for the toy's verdict
turns.

A verdict turn on a counterfactual box (``toy_pretrain.verdict_box``) can be answered by grounding the question
again and ignoring the drawn box: on a fresh scene the model's grounding is usually right. On a scene where the
model itself got it wrong, grounding again gives the same wrong box; only a model that reads the drawn box (and
answers with a different object) is right. The paper trains its refinement on the model's own errors for this
reason; ``mine_own_errors`` collects them: the starting model, greedy and single shot through the product's own
loop and engine (``ivt_core.loop.run_samples``), on scenes of their own split (``MINED_SPLIT``, never the
training stream, val or test), keeping each box that parsed: under IoU 0.5 an error, else a right answer.
``toy_pretrain`` caches them as ``OUT/own_errors.json`` (a resumed run reuses them) and ``ShapesGrounding`` draws
``own_error_share`` of its verdict turns' wrong boxes from the errors and ``own_right_share`` of their right boxes
from the right answers (a model judged on its own right boxes, edges as it draws them, not on jittered truths).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path

from ivt_core.boxes import iou
from ivt_core.data.shapes import ShapesConfig, make_sample

MINED_SPLIT = "mined"
WRONG_BELOW_IOU = 0.5
CHUNK = 2048


def mine_own_errors(model, processor, world: ShapesConfig, seed: int, scenes: int, device: str,
                    batch_size: int = 256, workers: int = 0, progress=print) -> dict:
    """{"errors": [{"index", "box"}], "right": [...], "unreadable", "seconds"}: the model's wrong and right step-0
    boxes on ``scenes`` scenes of ``MINED_SPLIT``; unparsable answers are skipped (a verdict turn needs a box)."""
    from ivt_core.data.sample import Sample
    from ivt_core.families import FAMILIES
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_samples

    grounder = TransformersGrounder(model, processor, FAMILIES["qwen3_vl"], "toy", device)
    loop = LoopConfig(steps=0, batch_size=batch_size, sampling=Sampling(max_new_tokens=40))
    began, errors, right, unreadable = time.time(), [], [], 0
    pool = ProcessPoolExecutor(workers) if workers else None  # drawing the scenes is serial Python otherwise
    model.eval()
    try:
        for begin in range(0, scenes, CHUNK):
            indices = range(begin, min(scenes, begin + CHUNK))
            raw = list(pool.map(partial(make_sample, world, seed, MINED_SPLIT), indices, chunksize=64)) if pool \
                else [make_sample(world, seed, MINED_SPLIT, i) for i in indices]
            samples = [Sample(s.id, "shapes", MINED_SPLIT, "", 0, 0, s.expression, s.bbox) for s in raw]
            trajectories = run_samples(grounder, samples, loop, [s.image for s in raw])
            for index, scene, trajectory in zip(indices, raw, trajectories, strict=True):
                box = trajectory.steps[0].box
                if box is None:
                    unreadable += 1
                else:
                    kept = errors if iou(box, scene.bbox) < WRONG_BELOW_IOU else right
                    kept.append({"index": index, "box": [box.x1, box.y1, box.x2, box.y2]})
            progress(f"own errors: {len(errors)} wrong boxes in {indices.stop} scenes ({unreadable} unreadable), "
                     f"{time.time() - began:.0f} s")
    finally:
        model.train()
        if pool:
            pool.shutdown(cancel_futures=True)
    return {"errors": errors, "right": right, "unreadable": unreadable, "seconds": round(time.time() - began, 1)}


def load_or_mine(path: Path, model, processor, world: ShapesConfig, seed: int, scenes: int, device: str,
                 source: str, workers: int = 0) -> dict:
    """What ``mine_own_errors`` returns, cached at ``path`` when it was mined by the model from ``source`` in as
    many scenes of this world and seed, else mined now and cached there."""
    key = json.loads(json.dumps({"source": source, "world": asdict(world), "seed": seed, "scenes": scenes}))
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key and "right" in cached:
            return cached
    mined = {"key": key, **mine_own_errors(model, processor, world, seed, scenes, device, workers=workers)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mined))
    return mined
