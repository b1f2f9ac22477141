"""Stopping policies: when the loop stops refining a sample.

One definition serves the live loop (``should_stop`` after each step) and the report (``stop_step`` replayed
over recorded steps), so a policy's number in a report is exactly what running under it would give with greedy
decoding. Label-free policies see only the model's answers:

- ``fixed``: run all T refinement steps;
- ``converged``: stop when IoU(b(t-1), b(t)) >= 0.95;
- ``agree``: stop when two consecutive answers agree (every corner within 2 px: the model repeats itself);
- ``self``: stop when the model says its box is correct.

``oracle`` (stop at the step with the best IoU against ground truth) exists for analysis only; every report
labels it "oracle (uses ground truth)".
"""

from __future__ import annotations

from collections.abc import Sequence

from ivt_core.boxes import iou
from ivt_core.errors import InvalidInputError
from ivt_core.records import StepRecord

LABEL_FREE_POLICIES = ("fixed", "converged", "agree", "self")
POLICIES = (*LABEL_FREE_POLICIES, "oracle")
ORACLE_LABEL = "oracle (uses ground truth)"
CONVERGED_IOU = 0.95
AGREE_PIXELS = 2.0


def check_policy(policy: str, allow_oracle: bool = False) -> str:
    """Return ``policy`` if valid. Raises InvalidInputError naming the valid ones."""
    valid = POLICIES if allow_oracle else LABEL_FREE_POLICIES
    if policy not in valid:
        hint = " (oracle needs ground truth and is for analysis only)" if policy == "oracle" else ""
        raise InvalidInputError(f"unknown stopping policy {policy!r}{hint}; use one of {', '.join(valid)}")
    return policy


def should_stop(steps: Sequence[StepRecord], policy: str) -> bool:
    """Whether a label-free ``policy`` stops after the last of ``steps`` (step 0 never stops by itself)."""
    if len(steps) < 2 or policy == "fixed":
        return False
    prev, last = steps[-2], steps[-1]
    if policy == "self":
        return last.says_correct and last.box is not None
    if prev.box is None or last.box is None:
        return False
    if policy == "converged":
        return iou(prev.box, last.box) >= CONVERGED_IOU
    if policy == "agree":
        a, b = prev.box.to_xyxy(), last.box.to_xyxy()
        return all(abs(x - y) <= AGREE_PIXELS for x, y in zip(a, b, strict=True))
    raise InvalidInputError(f"policy {policy!r} cannot run live; use one of {', '.join(LABEL_FREE_POLICIES)}")


def stop_step(steps: Sequence[StepRecord], policy: str) -> int:
    """The step index at which ``policy`` stops over recorded ``steps`` (the last one if it never stops)."""
    if not steps:
        return 0
    if policy == "oracle":
        ious = [s.iou for s in steps]
        return max(range(len(ious)), key=lambda i: (ious[i], -i))
    for t in range(1, len(steps)):
        if should_stop(steps[: t + 1], policy):
            return t
    return len(steps) - 1
