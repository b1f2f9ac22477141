"""What kind of mistake a box is: the wrong object, or the right object with loose edges.

Refinement can only help where there is something to refine. In a scene whose objects are known (the shapes
world keeps them in each sample's ``meta``), a box below the accuracy threshold is classified by the object it
overlaps most:

- ``loose edges``: the target itself (the right object, badly framed: what edge-by-edge refinement can fix);
- ``wrong object``: another object of the scene (a binding error: colour, shape, relation or order);
- ``background``: no object at all;
- ``unreadable``: no box could be read from the answer.

``wrong_box_kind`` names a wrong object's difference from the target as well ("wrong colour", "wrong shape",
"wrong size", "wrong one" for an identical object elsewhere): what a verifier has to see to reject the box.

Without known objects (imported datasets) an error overlapping the target is ``loose edges`` and any other is
``elsewhere``. ``correct`` boxes reach the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ivt_core.boxes import Box, iou
from ivt_core.records import Trajectory

KINDS = ("correct", "loose edges", "wrong object", "background", "elsewhere", "unreadable")


def error_kind(box: Box | None, ground_truth: Box, meta: Mapping | None, tau: float = 0.5) -> str:
    """The kind of ``box`` against ``ground_truth`` (``meta``: the sample's meta, with ``objects`` and ``target``
    when the scene is known)."""
    if box is None:
        return "unreadable"
    if iou(box, ground_truth) >= tau:
        return "correct"
    objects = (meta or {}).get("objects")
    if not objects or "target" not in meta:
        return "loose edges" if iou(box, ground_truth) > 0 else "elsewhere"
    overlaps = [iou(box, Box(*o["box"])) for o in objects]
    best = max(range(len(objects)), key=overlaps.__getitem__)
    if overlaps[best] <= 0:
        return "background"
    return "loose edges" if best == meta["target"] else "wrong object"


def kind_shares(trajectories: Sequence[Trajectory], samples: Mapping[str, dict], tau: float = 0.5) -> dict:
    """Shares of each kind at step 0 and at the final step: ``{"step0": {kind: share}, "final": {...}}``.

    ``samples`` maps sample id to ``{"bbox": Box, "meta": dict}``; trajectories of unknown samples are skipped.
    Kinds that never occur are left out.
    """
    out = {}
    for row in ("step0", "final"):
        counts: dict[str, int] = {}
        n = 0
        for t in trajectories:
            info = samples.get(t.sample_id)
            if info is None or not t.steps:
                continue
            step = t.steps[0] if row == "step0" else t.steps[t.stop_step]
            kind = error_kind(step.box, info["bbox"], info.get("meta"), tau)
            counts[kind] = counts.get(kind, 0) + 1
            n += 1
        out[row] = {k: counts[k] / n for k in KINDS if k in counts}
    return out


def wrong_box_kind(box: Box | None, ground_truth: Box, meta: Mapping | None, tau: float = 0.5) -> str:
    """``error_kind``, with "wrong object" split by what tells the boxed object from the target: "wrong shape"
    when the shapes differ, else "wrong colour", "wrong size", or "wrong one" (an identical object elsewhere)."""
    kind = error_kind(box, ground_truth, meta, tau)
    if kind != "wrong object":
        return kind
    from ivt_core.teachers.geometric import minimal_verdict

    objects = meta["objects"]
    covered = max(objects, key=lambda o: iou(box, Box(*o["box"])))
    return minimal_verdict(covered, objects[meta["target"]]).rstrip(".").lower()
