"""The few training knobs a person sets in the browser, turned into a trainer's argument list.

The model is picked from the workspace's registry (never typed as a path), every value is checked here and
then again by the trainer's own preflight when the job is submitted, so the browser can only start a trainer
with validated parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivt_core.errors import InvalidInputError
from ivt_core.rewards import REWARDS


@dataclass
class TrainForm:
    kind: str  # "sft" or "grpo"
    model: dict  # a registry row (store.models)
    epochs: float = 2.0
    max_steps: int = -1
    lr: float = 2e-4
    lora_r: int = 64
    load_in_4bit: bool = False
    full_finetune: bool = False
    replay: float = 0.0
    batch_size: int = 4
    group_size: int = 6
    beta: float = 0.04
    reward: str = "final_iou_format"
    dataset: str = "shapes"
    split: str = "train"
    gpus: int = 1

    def args(self) -> list[str]:
        """The trainer's arguments. Raises InvalidInputError naming the field to fix."""
        if self.kind not in ("sft", "grpo"):
            raise InvalidInputError(f"training kind must be sft or grpo, not {self.kind!r}")
        _check(self.lr is not None and 0 < self.lr < 1, f"learning rate must be between 0 and 1, got {self.lr}")
        _check(self.lora_r is not None and 1 <= self.lora_r <= 1024, f"LoRA rank must be 1..1024, got {self.lora_r}")
        _check(self.gpus is not None and 1 <= self.gpus <= 64, f"GPUs must be 1..64, got {self.gpus}")
        _check(self.max_steps is not None and (self.max_steps == -1 or self.max_steps >= 1),
               f"max steps must be at least 1 (or -1 for 'use epochs'), got {self.max_steps}")
        common = ["--lr", f"{self.lr:g}", "--lora-r", str(int(self.lora_r)), "--gpus", str(int(self.gpus))]
        if self.kind == "sft":
            if self.model.get("adapter_path"):
                raise InvalidInputError(f"model {self.model['name']} is an adapter; SFT starts from a base model "
                                        "(pick one without an adapter)")
            _check(self.epochs is not None and 0 < self.epochs <= 100, f"epochs must be in (0, 100], got {self.epochs}")
            _check(self.replay is not None and 0 <= self.replay <= 10, f"replay must be 0..10, got {self.replay}")
            _check(self.batch_size is not None and 1 <= self.batch_size <= 512,
                   f"batch size must be 1..512, got {self.batch_size}")
            args = ["--base", self.model["base_path"], "--epochs", f"{self.epochs:g}", "--max-steps",
                    str(int(self.max_steps)), "--batch-size", str(int(self.batch_size)), *common]
            if self.replay:
                args += ["--replay", f"{self.replay:g}"]
            if self.full_finetune:
                args.append("--full-finetune")
            if self.load_in_4bit:
                args.append("--load-in-4bit")
            return args
        _check(self.group_size is not None and self.group_size >= 2,
               f"G (rollouts per prompt) must be at least 2, got {self.group_size}")
        _check(self.beta is not None and self.beta >= 0, f"beta must be 0 or more, got {self.beta}")
        if self.reward not in REWARDS:
            raise InvalidInputError(f"unknown reward {self.reward!r}; use one of {', '.join(REWARDS)}")
        args = ["--base", self.model["base_path"], "--group-size", str(int(self.group_size)), "--beta",
                f"{self.beta:g}", "--reward", self.reward, "--dataset", self.dataset, "--split", self.split,
                "--max-steps", str(int(self.max_steps if self.max_steps > 0 else 50)), *common]
        if self.model.get("adapter_path"):
            args += ["--init-adapter", self.model["adapter_path"]]
        return args


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidInputError(message)
