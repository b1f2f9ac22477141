"""``SFTConfig`` and ``GRPOConfig``: the trainers' settings (``training/sft.py``, ``training/grpo.py``).

They live here, not beside the trainers, so that the CLI, the browser's Train form and the job runner read the
same defaults and limits without importing the trainers (``ivt_core`` never imports ``training``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ivt_core.config.settings import check_settings, setting, steps_setting
from ivt_core.errors import InvalidInputError
from ivt_core.policy_gradient import LOSS_TYPES, SCALE_REWARDS
from ivt_core.render import RENDER_STYLES
from ivt_core.rewards import REWARDS

LORA_TARGETS = {
    "attention": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
    "all": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
}
LORA_TARGET_WORDS = {"attention": "q/k/v/o projections", "all": "q/k/v/o projections and MLPs"}  # for people


SMALL_MODEL = 100_000_000  # parameters; below: GRPO's default learning rate is SMALL_MODEL_LR
SMALL_MODEL_LR, LARGE_MODEL_LR = 3e-4, 1e-5


def check_adapter_base(adapter: Path, base: Path) -> None:
    """Raise InvalidInputError if a LoRA adapter was trained on another base model."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        return
    wanted = json.loads(config.read_text()).get("base_model_name_or_path", "")
    if wanted and Path(wanted).resolve() != base.resolve() and Path(wanted).name != base.name:
        raise InvalidInputError(f"adapter {adapter} was trained on {wanted}, not on {base}; use the matching base")


def _check_base(base: str) -> None:
    if not (Path(base) / "config.json").is_file():
        raise InvalidInputError(f"base model folder {base} has no config.json; give a checkpoint folder")


def default_base() -> str:
    """The shipped toy model, the base when none is given."""
    from ivt_core.bootstrap import toy_model_path

    return str(toy_model_path())


@dataclass
class TrainerSettings:
    """What every trainer shares: where it writes, on how many GPUs, and for which job."""

    workspace: str = setting("workspace", "workspace folder", path=True)
    gpus: int = setting(1, "> 1: the job runner starts it under `accelerate launch --num_processes N` (DDP)",
                        min=1, max=64, form=True, label="GPUs")
    job_id: int = setting(0, "the job this run reports to (set by the job runner)", min=0, hidden=True)


@dataclass
class SFTConfig(TrainerSettings):
    """SFT on approved corrective traces. ``out`` defaults to WORKSPACE/models/sft-<job id or time>."""

    job_kind: ClassVar[str] = "sft"

    base: str = setting("", "base checkpoint folder (default: the shipped toy model)", path=True)
    out: str = setting("", "output folder (default: WORKSPACE/models/sft-<job id or time>)", path=True)
    traces_status: str = setting("approved", "train on the traces with this review status",
                                 choices=("approved", "pending", "rejected"))
    epochs: float = setting(2.0, "passes over the traces", min=0.0, max=100.0, form=True, label="Epochs")
    max_steps: int = setting(-1, "optimizer steps; -1: the epochs decide", min=-1, form=True,
                             label="Max steps (-1: epochs decide)")
    lr: float = setting(2e-4, "learning rate (LoRA: 1e-4..5e-4; full fine-tuning of a small model: ~1e-4)",
                        min=1e-8, max=0.1, form=True, label="Learning rate")
    batch_size: int = setting(4, "traces per device and step", min=1, max=512, form=True, label="Batch size")
    grad_accum: int = setting(1, "gradient accumulation steps", min=1, max=1024)
    lora_r: int = setting(64, "LoRA rank", min=1, max=1024, form=True, label="LoRA rank")
    lora_alpha: int = setting(128, "LoRA alpha (scale = alpha / rank)", min=1, max=4096)
    lora_dropout: float = setting(0.05, "LoRA dropout", min=0.0, max=0.9)
    lora_targets: str = setting("attention", "attention: q/k/v/o of the language model; all: its MLPs too",
                                choices=tuple(LORA_TARGETS))
    load_in_4bit: bool = setting(False, "load the base in 4-bit NF4 (QLoRA; needs bitsandbytes and a GPU)",
                                 form=True, label="4-bit NF4 base (needs bitsandbytes + GPU)")
    full_finetune: bool = setting(False, "train every weight instead of a LoRA adapter (small models such as the "
                                  "toy)", form=True, label="Full fine-tuning instead of LoRA (small models)")
    replay: float = setting(0.0, "single-shot grounding examples added per trace (keeps step 0 from drifting)",
                            min=0.0, max=4.0, form=True, label="Replay per trace")
    replay_source: str = setting("traces", "where replay examples come from: traces (the traces' own images) or "
                                 "fresh (new shapes-world scenes, never seen in a trace; shapes-world traces only)",
                                 choices=("traces", "fresh"), form=True, label="Replay from")
    train_step0: bool = setting(False, "also train the step-0 answer, which is the model's own greedy answer "
                                "(self-distillation: it anchors step 0 while the refinement turns are learned; never a "
                                "counterfactual trace's, which is not the model's)",
                                form=True, label="Train step 0 on the model's own answer")
    freeze_vision: bool = setting(True, "full fine-tuning leaves the vision tower as it is (training it moved the "
                                  "toy's step 0 from 0.762 to 0.596); LoRA never touches it",
                                  form=True, label="Freeze the vision tower")
    eval_fraction: float = setting(0.1, "share of traces held out for the eval loss", min=0.0, max=0.89)
    verifier_run: int = setting(0, "after training, the verifier test (`ivt verifier`) on this run's step-0 boxes, "
                                "a base model's run: how well the new model tells its right boxes from its wrong "
                                "ones (AUROC), kept on the model card and in the registry; 0: not run", min=0,
                                form=True, label="Verifier test on run (id; 0: none)")
    save_steps: int = setting(50, "save a checkpoint every N steps", min=1)
    seed: int = setting(0, "seed of the data order and the adapter's initialisation", min=0)
    workers: int = setting(0, "data-loader processes building the examples (0: in the training process); a GPU "
                           "waits on one process (~20 ms per toy example)", min=0, max=64)

    def check(self) -> SFTConfig:
        """Refuse nonsense before anything starts; messages say what to fix."""
        self.base = self.base or default_base()
        check_settings(self)
        if self.epochs <= 0 and self.max_steps <= 0:
            raise InvalidInputError("give --epochs > 0 or --max-steps > 0")
        if self.max_steps == 0:
            raise InvalidInputError("--max-steps must be at least 1 (or -1: the epochs decide)")
        if self.full_finetune and self.load_in_4bit:
            raise InvalidInputError("--full-finetune cannot train a 4-bit base; drop one of the two")
        _check_base(self.base)
        return self

    @classmethod
    def for_model(cls, model: dict, **settings) -> SFTConfig:
        """SFT of a registered model (its registry row): SFT starts from a base model, not an adapter."""
        if model.get("adapter_path"):
            raise InvalidInputError(f"model {model['name']} is an adapter; SFT starts from a base model (pick one "
                                    "without an adapter)")
        return cls(base=model["base_path"], **settings)

    def preflight(self, workspace) -> None:
        """Everything that can be refused before a run starts: the settings, and traces to train on."""
        from ivt_core.store.traces import count_traces

        self.check()
        if self.verifier_run:
            from ivt_core.store.runs import get_run

            with workspace.connect() as db:
                get_run(db, self.verifier_run)  # an unknown run is said before training, not after
        if self.out and (Path(self.out) / "data" / "traces.jsonl").is_file():
            return  # resuming from a snapshot
        with workspace.connect() as db:
            if count_traces(db).get(self.traces_status, 0) == 0:
                raise InvalidInputError(f"no {self.traces_status} traces in {workspace.root}: synthesize and "
                                        "approve some (`ivt synth`, `ivt traces approve`) before SFT")


@dataclass
class GRPOConfig(TrainerSettings):
    """GRPO through the IVT loop. ``out`` defaults to WORKSPACE/models/grpo-<job id or time>."""

    job_kind: ClassVar[str] = "grpo"

    base: str = setting("", "base checkpoint folder (default: the shipped toy model)", path=True)
    init_adapter: str = setting("", "an SFT adapter to start from: merged into the base, which is also the "
                                "KL reference", path=True)
    out: str = setting("", "output folder (default: WORKSPACE/models/grpo-<job id or time>)", path=True)
    dataset: str = setting("shapes", "dataset whose samples are the prompts")
    split: str = setting("train", "split of the prompts (a train split: a test split would no longer be held out)")
    group_size: int = setting(6, "G: rollouts per prompt (group-normalised advantages need at least 2)", min=2,
                              max=256, form=True, label="G rollouts per prompt")
    prompts: int = setting(4, "prompts per step", min=1, max=1024, form=True, label="Prompts per step")
    steps: int = steps_setting(help="refinement steps T of every rollout", form=True, label="T (refinement steps)")
    max_steps: int = setting(50, "optimizer steps", min=1, form=True, label="Max steps")
    lr: float = setting(0.0, "learning rate; 0: by model size, 3e-4 under 100 M parameters (the 11 M toy needs "
                        "1e-4..5e-4 to move) and 1e-5 above (LoRA on a 2-8 B model)", min=0.0, max=0.1, form=True,
                        label="Learning rate (0: by model size)")
    beta: float = setting(0.04, "KL penalty to the reference (0: none, and no reference pass)", min=0.0, max=10.0,
                          form=True, label="KL beta")
    clip: float = setting(0.2, "PPO clip range epsilon (TRL's epsilon): acts from the second of num_iterations",
                          min=1e-3, max=0.99)
    loss_type: str = setting("grpo", "how token losses add up (TRL's loss_type): grpo, each answer's token mean "
                             "then the mean over answers; dapo, the mean over every trained token; dr_grpo, the "
                             "token sum over answers x the maximum length", choices=LOSS_TYPES, form=True,
                             label="Loss aggregation")
    scale_rewards: str = setting("group", "advantages = reward - group mean, divided by the group's std (group), "
                                 "the batch's std (batch) or nothing (none: a group of near-equal rewards then "
                                 "gives small advantages instead of amplified noise)", choices=SCALE_REWARDS,
                                 form=True, label="Scale rewards by")
    num_iterations: int = setting(1, "optimisation passes over each batch of rollouts (TRL's num_iterations, mu); "
                                  "from the second, the ratio to the old policy and the clip act", min=1, max=16)
    mask_truncated_completions: bool = setting(False, "answers cut at the token limit carry no loss at all (they "
                                               "never get an end token they did not sample, either way)")
    train_turns: str = setting("all", "the answers the loss trains: all, or refinement (step 0 is context, so "
                               "that an improvement reward cannot be earned by making step 0 worse)",
                               choices=("all", "refinement"), form=True, label="Trained answers")
    reward: str = setting("final_iou_format", "reward of a trajectory (ivt_core.rewards): final_iou_format, "
                          "mean_iou, final_minus_degradation, improvement (final - step-0 IoU), fix_break (+1 fix, "
                          "-1 break)", choices=tuple(REWARDS), form=True, label="Reward")
    temperature: float = setting(1.0, "sampling temperature of the rollouts", min=0.01, max=10.0)
    max_new_tokens: int = setting(96, "answer length limit per step, in tokens", min=1, max=8192)
    render: str = setting("auto", "how rollouts show the model its box: paper (red outline, 25% fill), outline "
                          "(outline only, in a colour outside the scene palette), auto (outline for shapes-world "
                          "datasets)", choices=("auto", *RENDER_STYLES))
    lora_r: int = setting(16, "LoRA rank", min=1, max=1024, form=True, label="LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha (scale = alpha / rank)", min=1, max=4096)
    micro_batch: int = setting(0, "trajectories per forward/backward pass; 0: all of a step's rollouts in one "
                               "pass, halved whenever the device runs out of memory (fewer, larger passes are "
                               "faster: the toy's update 1.8 s at 32, 0.45 s at 128 on an H200)", min=0, max=1024)
    save_steps: int = setting(10, "save a checkpoint every N steps", min=1)
    flywheel_below: float = setting(-1.0, "rollouts with a reward under this become pending traces (< 0: off)",
                                    min=-1.0)
    seed: int = setting(0, "seed of the prompt draw and the sampling", min=0)

    def check(self) -> GRPOConfig:
        """Refuse nonsense before anything starts; messages say what to fix."""
        self.base = self.base or default_base()
        check_settings(self)
        if 0 < self.lr < 1e-8:
            raise InvalidInputError(f"lr must be 0 (by model size) or at least 1e-8, got {self.lr:g} (--lr)")
        _check_base(self.base)
        if self.init_adapter:
            if not (Path(self.init_adapter) / "adapter_config.json").is_file():
                raise InvalidInputError(f"--init-adapter {self.init_adapter} is not a LoRA adapter folder")
            check_adapter_base(Path(self.init_adapter), Path(self.base))
        return self

    def learning_rate(self, parameters: int) -> float:
        """The learning rate to use for a model of ``parameters`` parameters (``lr`` 0: by size)."""
        return self.lr or (SMALL_MODEL_LR if parameters < SMALL_MODEL else LARGE_MODEL_LR)

    @classmethod
    def for_model(cls, model: dict, **settings) -> GRPOConfig:
        """GRPO from a registered model (its registry row); an adapter model's adapter is the starting point."""
        return cls(base=model["base_path"], init_adapter=model.get("adapter_path") or "", **settings)

    def preflight(self, workspace) -> None:
        """The settings, and prompts to draw from."""
        from ivt_core.store.samples import get_samples

        self.check()
        with workspace.connect() as db:
            get_samples(db, self.dataset, self.split, limit=1)
