"""The numbers every report shows, defined once.

- ``Acc@tau``: share of samples whose box has IoU >= tau with the ground truth (unparsable = miss), tau in
  0.5 / 0.7 / 0.75 / 0.9 (0.7 for the paper, 0.75 for the official Ref-L4 / Ref-Adv evaluators); ``mIoU``:
  mean IoU (a missing box counts 0).
- Reported at step 0, at the final step (where the run stopped), under each label-free stopping policy replayed
  over the recorded steps, and at the best step, which needs ground truth and is labelled
  ``oracle (uses ground truth)``.
- Per-step IoU degradation: mean over samples and steps t >= 1 of max(0, IoU(t-1) - IoU(t)).
- Outcomes (band 0.05): ``improved`` if final - step0 > band, ``degraded`` if < -band; otherwise
  ``oscillating`` if some step moved IoU by more than the band on the way, else ``unchanged``.
- Parse-failure rate: share of all recorded answers without a readable box (and of step-0 answers alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from ivt_core.records import Trajectory
from ivt_core.stopping import LABEL_FREE_POLICIES, ORACLE_LABEL, stop_step

THRESHOLDS = (0.5, 0.7, 0.75, 0.9)
OUTCOME_BAND = 0.05
OUTCOMES = ("improved", "degraded", "unchanged", "oscillating")


def accuracy(ious: Sequence[float], tau: float) -> float:
    """Share of ``ious`` at or above ``tau`` (0.0 for no samples)."""
    return sum(1 for v in ious if v >= tau) / len(ious) if ious else 0.0


def summarize(ious: Sequence[float]) -> dict[str, float]:
    """Acc@tau for every threshold plus mean IoU, keyed ``acc@0.5`` ... ``miou``."""
    out = {f"acc@{tau:g}": accuracy(ious, tau) for tau in THRESHOLDS}
    out["miou"] = fmean(ious) if ious else 0.0
    return out


def degradation(trajectory: Trajectory) -> list[float]:
    """Per-step IoU losses max(0, IoU(t-1) - IoU(t)) for t = 1 .. stop step."""
    ious = trajectory.ious[: trajectory.stop_step + 1]
    return [max(0.0, a - b) for a, b in zip(ious, ious[1:], strict=False)]


def outcome(trajectory: Trajectory, band: float = OUTCOME_BAND) -> str:
    """Outcome class of one trajectory (see the module docstring)."""
    ious = trajectory.ious[: trajectory.stop_step + 1]
    if not ious:
        return "unchanged"
    delta = ious[-1] - ious[0]
    if delta > band:
        return "improved"
    if delta < -band:
        return "degraded"
    if any(abs(b - a) > band for a, b in zip(ious, ious[1:], strict=False)):
        return "oscillating"
    return "unchanged"


def policy_ious(trajectories: Sequence[Trajectory], policy: str) -> tuple[list[float], float]:
    """IoUs at the step each trajectory would stop under ``policy``, and the mean stop step."""
    stops = [stop_step(t.steps[: t.stop_step + 1], policy) for t in trajectories]
    ious = [t.steps[s].iou if t.steps else 0.0 for t, s in zip(trajectories, stops, strict=True)]
    return ious, (fmean(stops) if stops else 0.0)


def per_step_curve(trajectories: Sequence[Trajectory]) -> list[dict[str, float]]:
    """IoU by step over the samples that reached each step: ``[{step, n, miou, acc@0.5, ...}]``."""
    longest = max((t.stop_step + 1 for t in trajectories), default=0)
    curve = []
    for step in range(longest):
        ious = [t.steps[step].iou for t in trajectories if t.stop_step >= step]
        curve.append({"step": step, "n": len(ious), **summarize(ious)})
    return curve


def run_metrics(trajectories: Sequence[Trajectory]) -> dict:
    """Every metric of a run, as one JSON-ready dict (see the module docstring for definitions)."""
    policies = {}
    for policy in LABEL_FREE_POLICIES:
        ious, mean_stop = policy_ious(trajectories, policy)
        policies[policy] = {**summarize(ious), "mean_stop_step": mean_stop}
    losses = [loss for t in trajectories for loss in degradation(t)]
    outcomes = [outcome(t) for t in trajectories]
    answers = [s for t in trajectories for s in t.steps[: t.stop_step + 1]]
    step0 = [t.steps[0] for t in trajectories if t.steps]
    n = len(trajectories)
    return {
        "n": n,
        "thresholds": list(THRESHOLDS),
        "step0": summarize([t.step0_iou for t in trajectories]),
        "final": {**summarize([t.final_iou for t in trajectories]),
                  "mean_stop_step": fmean([t.stop_step for t in trajectories]) if n else 0.0},
        "policies": policies,
        "oracle": {"label": ORACLE_LABEL, **summarize([t.oracle_iou for t in trajectories])},
        "per_step": per_step_curve(trajectories),
        "degradation": fmean(losses) if losses else 0.0,
        "outcomes": {name: (outcomes.count(name) / n if n else 0.0) for name in OUTCOMES},
        "parse_failure_rate": (sum(not s.parse_ok for s in answers) / len(answers)) if answers else 0.0,
        "parse_failure_rate_step0": (sum(not s.parse_ok for s in step0) / len(step0)) if step0 else 0.0,
    }
