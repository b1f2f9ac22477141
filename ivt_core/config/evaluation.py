"""``EvalConfig``: what an evaluation runs (the model, the data, the loop's settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ivt_core.boxes import CONVENTIONS
from ivt_core.config.settings import check_settings, setting, steps_setting
from ivt_core.derived_verdict import VERDICTS
from ivt_core.errors import InvalidInputError
from ivt_core.families import FAMILIES
from ivt_core.render import RENDER_STYLES
from ivt_core.stopping import LABEL_FREE_POLICIES

ENGINES = ("auto", "cached", "plain")


@dataclass
class ModelSettings:
    """Which local checkpoint to load and how: shared by the configs that load one (evaluation, serving)."""

    model: str = setting("", "local checkpoint folder (default: the shipped toy model)", path=True)
    adapter: str = setting("", "LoRA adapter folder to put on the model (several, comma-separated, apply in order)",
                           path=True)
    coords: str = setting("", "box convention for models outside the known families", choices=("", *CONVENTIONS))
    device: str = setting("auto", "auto, cpu or cuda[:N]")
    load_in_4bit: bool = setting(False, "load the base model in 4-bit NF4 (needs bitsandbytes and a GPU)",
                                 flags=("--4bit", "--load-in-4bit"))

    def check_model(self) -> None:
        """Raise InvalidInputError unless the checkpoint, the adapters and the device settings make sense."""
        if self.model and not (Path(self.model) / "config.json").is_file():
            raise InvalidInputError(f"model folder {self.model} has no config.json; give a checkpoint folder")
        for adapter in self.adapters():
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise InvalidInputError(f"adapter folder {adapter} has no adapter_config.json")
        if self.load_in_4bit and self.device == "cpu":
            raise InvalidInputError("--4bit needs a GPU; drop it or use --device cuda")

    def adapters(self) -> list[str]:
        """The adapter folders, in the order they apply."""
        return [part for part in self.adapter.split(",") if part]


@dataclass
class EvalConfig(ModelSettings):
    """An evaluation of one model on one dataset split through the IVT loop."""

    job_kind: ClassVar[str] = "eval"

    dataset: str = setting("", "dataset name in the workspace")
    split: str = setting("", "split to evaluate")
    limit: int | None = setting(None, "evaluate only the first N samples", min=1, max=100_000_000, form=True,
                                label="At most N samples (0: all)")
    steps: int = steps_setting(form=True, label="T (refinement steps)")
    stop: str = setting("fixed", "stopping policy (how the answer's step is picked without ground truth)",
                        choices=LABEL_FREE_POLICIES, form=True, label="Stopping policy")
    batch_size: int = setting(8, "samples advancing together; auto (0): as many as the GPU's free memory holds",
                              min=0, max=4096)
    max_new_tokens: int = setting(256, "answer length limit per step, in tokens", min=1, max=8192)
    temperature: float = setting(0.0, "0: greedy answers; above 0: sampled from softmax(logits / temperature), cut "
                                 "to --top-p (e.g. single-shot candidates for the paper table's best-of-K)",
                                 min=0.0, max=2.0)
    top_p: float = setting(1.0, "with --temperature: sample from the smallest set of tokens holding this much "
                           "probability", min=0.01, max=1.0)
    seed: int = setting(0, "with --temperature: the sampling seed (the same seed, the same answers on one machine)",
                        min=0, max=2**31 - 1)
    verdict: str = setting("own", "own: each refinement's verdict is the model's; derived: a model that names what its "
                           "box is on (\"It is on the small red square.\", a --verdict-name-first toy) gets the "
                           "verdict that name implies against the expression's stated size, colour and shape, and "
                           "goes on from it (label-free; the shapes world's words; answers with no such name "
                           "stand). Stored with the run", choices=VERDICTS, form=True, label="Refinement verdict")
    render: str = setting("auto", "how the model is shown its box: paper (red outline, 25% fill), outline (an "
                          "outline in a colour outside the scene palette, no fill), auto (outline for shapes-world "
                          "datasets, else paper); stored with the run", choices=("auto", *RENDER_STYLES),
                          form=True, label="Box drawing")
    engine: str = setting("auto", "cached: keep each conversation's KV cache between steps, continuous batching "
                          "(Qwen3-VL); plain: re-encode the whole conversation each step; auto: cached where "
                          "supported", choices=ENGINES)
    lanes: int = setting(1, "the cached engine's lanes: the --batch-size conversations split between engines that "
                         "take turns on the GPU, so one lane's CPU work (answers read, boxes drawn, tokens) overlaps "
                         "the other's GPU work; answers do not change. Each lane decodes half the batch, so one "
                         "lane is faster where the GPU holds a large batch (4B, H200, 505 samples: one lane of 512 "
                         "33.8-34.8 ms/sample, --lanes 2 35.3-35.9)",
                         min=1, max=8)
    gpus: int = setting(1, "spread the samples over N GPUs of this machine under accelerate launch (with --device "
                        "cpu: N CPU processes); the merged run is stored as one. More machines: run `accelerate "
                        "launch ... -m ivt_core.cli eval` on each", min=1, max=64)
    resume_run: int | None = setting(None, "continue this unfinished run (its stored settings are used)", min=1)
    endpoint: str = setting("", "evaluate a model behind an OpenAI-compatible server instead of a local checkpoint "
                            "(`ivt serve`, vLLM, SGLang): its base URL, e.g. http://gpu-box:8000/v1", form=True,
                            label="Or a model on a server: its URL (OpenAI-compatible, e.g. ivt serve)")
    endpoint_model: str = setting("", "with --endpoint: the model's name on the server (default: the first listed)",
                                  form=True, label="Model name on the server (empty: the first it lists)")
    endpoint_family: str = setting("", "with --endpoint: the model's family, if the server does not say it "
                                   "(ivt serve does)", choices=("", *FAMILIES))
    endpoint_api_key: str = setting("", "with --endpoint: the server's API key (never stored; default "
                                    "$IVT_ENDPOINT_API_KEY)", secret=True)
    concurrency: int = setting(16, "with --endpoint: requests in flight at once (each sample's conversation goes "
                               "on by itself)", min=1, max=1024)

    def check(self) -> EvalConfig:
        """Return self if the settings make sense. Raises InvalidInputError saying what to fix."""
        check_settings(self)
        if self.resume_run is None and not (self.dataset and self.split):
            raise InvalidInputError("--dataset and --split are required (or --resume-run RUN_ID)")
        self.check_model()
        if self.endpoint:
            if not self.endpoint.startswith(("http://", "https://")):
                raise InvalidInputError(f"--endpoint must start with http:// or https://, got {self.endpoint!r}")
            clash = [flag for flag, on in (("--model", self.model), ("--adapter", self.adapter),
                                           ("--4bit", self.load_in_4bit), ("--gpus", self.gpus > 1),
                                           ("--verdict derived", self.verdict == "derived")) if on]
            if clash:
                raise InvalidInputError(f"--endpoint runs the model on its server; drop {', '.join(clash)} (the "
                                        "server decides the checkpoint, adapters and devices)")
        return self

    def preflight(self, workspace) -> None:
        """What an evaluation job needs before it starts: the settings, and the run to resume or the samples
        (the default shapes splits are generated by the job itself when missing)."""
        from ivt_core.bootstrap import DEFAULT_SPLITS
        from ivt_core.store.runs import get_run
        from ivt_core.store.samples import get_samples

        self.check()
        with workspace.connect() as db:
            if self.resume_run is not None:
                get_run(db, self.resume_run)
            elif not (self.dataset == "shapes" and self.split in DEFAULT_SPLITS):
                get_samples(db, self.dataset, self.split, limit=1)

    @classmethod
    def for_model(cls, model: dict, **settings) -> EvalConfig:
        """An evaluation of a registered model (its registry row)."""
        return cls(model=model["base_path"], adapter=model.get("adapter_path") or "", **settings)

    def loop_config(self, dataset_kind: str = ""):
        """The loop's settings (the box drawing resolved for a dataset of ``dataset_kind``)."""
        from ivt_core.grounders.base import Sampling
        from ivt_core.loop import LoopConfig
        from ivt_core.render import render_style

        return LoopConfig(steps=self.steps, policy=self.stop, batch_size=self.batch_size,
                          render=render_style(self.render, dataset_kind),
                          sampling=Sampling(max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                                            temperature=self.temperature or 1.0, top_p=self.top_p),
                          engine=self.engine, lanes=self.lanes, verdict=self.verdict).check()
