"""The Teacher protocol: write the reasoning for one corrective step.

A teacher sees the image, the expression, the box the student is looking at (its own box at step 1, the previous
target after that) and where this step should take it (the target box; the last step's target is the ground
truth). It returns the reasoning text (and, for model teachers, the box it proposed, which is checked). The
written text must read as the student's own correction: it never says that the answer was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from ivt_core.boxes import Box


@dataclass
class TeachContext:
    sample_id: str
    expression: str
    image: Image.Image
    current: Box
    target: Box
    step: int
    total_steps: int
    objects: list[dict] = field(default_factory=list)
    target_object: int | None = None
    seed: int = 0

    @property
    def is_last(self) -> bool:
        return self.step == self.total_steps


@dataclass
class TeacherOutput:
    reasoning: str
    box: Box | None = None
    flags: list[str] = field(default_factory=list)
    raw_text: str = ""


class Teacher(Protocol):
    name: str

    def write(self, contexts: list[TeachContext]) -> list[TeacherOutput]:
        """One output per context, in order (batched so model teachers can batch their calls)."""
        ...


FORBIDDEN_PHRASES = ("ground truth", "ground-truth", "annotation", "the label", "correct answer", "i was given",
                     "hint")
