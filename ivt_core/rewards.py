"""GRPO rewards, each a plain function of a recorded trajectory tested on literal values.

Rewards read a recorded ``Trajectory`` (the same records and the same IoU the evaluation uses):

- ``final_iou_format`` (default, the paper's): final-step IoU + 0.1 x (share of answers with a readable box);
- ``mean_iou``: mean IoU over all steps;
- ``final_minus_degradation``: final IoU - 0.1 x (number of steps whose IoU fell by more than 0.05);
- ``improvement``: final IoU - step-0 IoU (what refinement added; pair it with ``train_turns="refinement"``, so
  that the policy cannot earn it by making step 0 worse);
- ``fix_break``: +1 when refinement turns a miss at step 0 into a hit at the final step (IoU 0.5), -1 for the
  reverse, 0 when it keeps the verdict.

The policy-gradient pieces (advantages, token log-probabilities, KL, the loss) are in ``policy_gradient``.
"""

from __future__ import annotations

from collections.abc import Callable

from ivt_core.errors import InvalidInputError
from ivt_core.records import Trajectory

FORMAT_WEIGHT = 0.1
DEGRADE_BAND = 0.05
HIT_IOU = 0.5


def final_iou_format(t: Trajectory) -> float:
    answered = t.steps[: t.stop_step + 1]
    readable = sum(s.parse_ok for s in answered) / len(answered) if answered else 0.0
    return t.final_iou + FORMAT_WEIGHT * readable


def mean_iou(t: Trajectory) -> float:
    answered = t.steps[: t.stop_step + 1]
    return sum(s.iou for s in answered) / len(answered) if answered else 0.0


def final_minus_degradation(t: Trajectory) -> float:
    ious = t.ious[: t.stop_step + 1]
    drops = sum(1 for a, b in zip(ious, ious[1:], strict=False) if a - b > DEGRADE_BAND)
    return t.final_iou - FORMAT_WEIGHT * drops


def improvement(t: Trajectory) -> float:
    return t.final_iou - t.step0_iou


def fix_break(t: Trajectory) -> float:
    before, after = t.step0_iou >= HIT_IOU, t.final_iou >= HIT_IOU
    return float(after) - float(before)


REWARDS: dict[str, Callable[[Trajectory], float]] = {
    "final_iou_format": final_iou_format,
    "mean_iou": mean_iou,
    "final_minus_degradation": final_minus_degradation,
    "improvement": improvement,
    "fix_break": fix_break,
}


def get_reward(name: str) -> Callable[[Trajectory], float]:
    if name not in REWARDS:
        raise InvalidInputError(f"unknown reward {name!r}; use one of {', '.join(REWARDS)}")
    return REWARDS[name]
