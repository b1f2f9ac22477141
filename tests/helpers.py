"""Small builders shared by tests."""

from ivt_core.boxes import Box
from ivt_core.records import StepRecord, Trajectory


def step(index, iou, box=None, says_correct=False, ok=True):
    return StepRecord(index, "", "", box if box is not None or not ok else Box(0, 0, 1, 1), iou, ok,
                      None if ok else "no box", says_correct)


def traj(ious, boxes=None, stop=None):
    boxes = boxes or [Box(0, 0, 10, 10)] * len(ious)
    steps = [step(i, v, b) for i, (v, b) in enumerate(zip(ious, boxes, strict=True))]
    return Trajectory("s", steps, len(ious) - 1 if stop is None else stop)
