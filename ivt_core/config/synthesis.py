"""``SynthConfig``: corrective trace synthesis from a run's own errors, the teacher's settings included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ivt_core.config.settings import MAX_STEPS, check_settings, setting
from ivt_core.errors import InvalidInputError
from ivt_core.teachers.geometric import STYLES

TEACHERS = ("geometric", "vlm")


@dataclass
class SynthConfig:
    """Which samples get traces, how many steps they have, and who writes them."""

    job_kind: ClassVar[str] = "synth"

    run: int | None = setting(None, "the recorded run whose step-0 errors to correct", min=1)
    run_of_job: int | None = setting(None, "the run that evaluation job N wrote (for a synthesis queued behind "
                                     "that job)", min=1)
    teacher: str = setting("geometric", "who writes the corrections: geometric (exact, from the ground truth) "
                           "or vlm (a stronger model)", choices=TEACHERS)
    style: str = setting("prose", "geometric teacher: full sentences (prose), a short fixed form (terse), or the "
                         "kind of error only (minimal, for tiny models)", choices=STYLES, form=True,
                         label="Teacher style")
    steps: int = setting(2, "corrective steps per trace (the last one reaches the ground truth)", min=1,
                         max=MAX_STEPS, form=True, label="Corrective steps")
    iou_low: float = setting(0.0, "keep samples with step-0 IoU above this", min=0.0, max=1.0)
    iou_high: float = setting(0.85, "... and below this", min=0.0, max=1.0)
    keep_ratio: float = setting(0.0, "keep traces (the box was right: say so) per corrective trace; -1: the "
                                "model's own mix (as many as its right answers per wrong one)", min=-1.0,
                                max=10.0, form=True, label="Keep traces per corrective trace (-1: the model's mix)")
    confirm: bool = setting(False, "end each trace with a step that keeps the corrected box and says it is correct",
                            form=True, label="End with a step that confirms the corrected box")
    include_zero: bool = setting(False, "also correct readable boxes with IoU 0 (the wrong object), which the "
                                 "paper's band excludes", form=True,
                                 label="Also correct boxes on the wrong object (IoU 0)")
    counterfactual: float = setting(0.0, "share of the run's samples that also get a counterfactual trace: the "
                                    "ground truth (kept) or another object's box (corrected) drawn as if the "
                                    "model had answered it, half each; teaches the verdict on boxes the model did "
                                    "not choose (scenes with several objects, e.g. the shapes world)", min=0.0,
                                    max=1.0, form=True, label="Counterfactual traces (share of samples)")
    seed: int = setting(0, "seed of the teacher's intermediate boxes and of the keep draw", min=0)
    batch_size: int = setting(16, "samples per teacher call (vlm teacher)", min=1, max=1024)
    teacher_model: str = setting("", "vlm teacher: local checkpoint folder, or the model name on a server")
    teacher_url: str = setting("", "vlm teacher: OpenAI-compatible server, e.g. http://host:8000/v1")
    teacher_family: str = setting("qwen2_5_vl", "vlm teacher on a server: its model family")
    teacher_api_key: str = setting("", "vlm teacher on a server: its API key (never stored; jobs read "
                                   "$IVT_TEACHER_API_KEY)", secret=True)
    device: str = setting("auto", "vlm teacher on this machine: auto, cpu or cuda[:N]")

    def check(self) -> SynthConfig:
        """Return self if the settings make sense. Raises InvalidInputError saying what to fix."""
        check_settings(self)
        if -1 < self.keep_ratio < 0:
            raise InvalidInputError(f"keep_ratio must be 0..10, or -1 for the model's own mix; got {self.keep_ratio}")
        if not self.iou_low < self.iou_high:
            raise InvalidInputError(f"the IoU band needs --iou-low < --iou-high, got {self.iou_low}..{self.iou_high}")
        if self.teacher == "vlm" and not (self.teacher_model or self.teacher_url):
            raise InvalidInputError("the vlm teacher needs --teacher-model PATH (local) or --teacher-url URL (server)")
        return self

    def preflight(self, workspace) -> None:
        """What a synthesis job needs before it starts: the settings, and a run (or the job that writes one)."""
        from ivt_core.store.jobs import get_job
        from ivt_core.store.runs import get_run

        self.check()
        if (self.run is None) == (self.run_of_job is None):
            raise InvalidInputError("give exactly one of --run RUN_ID or --run-of-job JOB_ID")
        with workspace.connect() as db:
            get_run(db, self.run) if self.run is not None else get_job(db, self.run_of_job)
