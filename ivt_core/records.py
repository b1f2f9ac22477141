"""What the loop records: one ``StepRecord`` per model answer, one ``Trajectory`` per sample.

These are plain data shared by the loop, the metrics, the store and (later) the UI and the trainers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivt_core.boxes import Box


@dataclass
class StepRecord:
    """One answer of the model: step 0 is the first grounding, steps >= 1 are refinements."""

    index: int
    raw_text: str
    reasoning: str
    box: Box | None
    iou: float
    parse_ok: bool
    parse_failure: str | None = None
    says_correct: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    own_text: str = ""  # the model's own answer, where the loop's derived verdict made it start otherwise


@dataclass
class Trajectory:
    """All steps of one sample, and the step at which the run's stopping policy stopped."""

    sample_id: str
    steps: list[StepRecord] = field(default_factory=list)
    stop_step: int = 0
    conversation: list[dict] | None = field(default=None, repr=False, compare=False)  # kept for GRPO only

    @property
    def ious(self) -> list[float]:
        return [s.iou for s in self.steps]

    @property
    def step0_iou(self) -> float:
        return self.steps[0].iou if self.steps else 0.0

    @property
    def final_iou(self) -> float:
        return self.steps[self.stop_step].iou if self.steps else 0.0

    @property
    def oracle_iou(self) -> float:
        """Best IoU over the recorded steps: needs ground truth, so for analysis only."""
        return max(self.ious[: self.stop_step + 1], default=0.0)


def trajectory_to_dict(trajectory: Trajectory) -> dict:
    """A trajectory as JSON-ready data (the conversation is not kept): what a distributed rank's shard file holds."""
    return {"sample_id": trajectory.sample_id, "stop_step": trajectory.stop_step,
            "steps": [{**{k: v for k, v in vars(s).items() if k != "box"},
                       "box": s.box.to_xyxy() if s.box else None} for s in trajectory.steps]}


def trajectory_from_dict(data: dict) -> Trajectory:
    """The inverse of ``trajectory_to_dict``."""
    steps = [StepRecord(**{**s, "box": Box(*s["box"]) if s["box"] is not None else None}) for s in data["steps"]]
    return Trajectory(data["sample_id"], steps, data["stop_step"])
