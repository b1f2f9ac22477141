"""Typed, documented settings: one dataclass per kind of work, one field per knob (``settings.setting``).

- ``evaluation.EvalConfig``: ``ivt eval`` and evaluation jobs;
- ``synthesis.SynthConfig``: ``ivt synth`` and synthesis jobs (the teacher's fields included);
- ``training.SFTConfig`` / ``training.GRPOConfig``: the trainers (``ivt train``, ``python -m training.*``);
- ``toy.ToyConfig``: pretraining the toy model.

The CLI's flags (``flags.py``), the browser's forms and the job records are generated from them. This package
imports none of the classes itself (the engine imports ``settings`` from here without loading them all).
"""

from __future__ import annotations

JOB_KINDS = ("eval", "synth", "sft", "grpo")


def job_config_class(kind: str):
    """The config class of a job kind. Raises InvalidInputError for a kind that is not a job."""
    if kind == "eval":
        from ivt_core.config.evaluation import EvalConfig

        return EvalConfig
    if kind == "synth":
        from ivt_core.config.synthesis import SynthConfig

        return SynthConfig
    if kind in ("sft", "grpo"):
        from ivt_core.config.training import GRPOConfig, SFTConfig

        return SFTConfig if kind == "sft" else GRPOConfig
    from ivt_core.errors import InvalidInputError

    raise InvalidInputError(f"unknown job kind {kind!r}; jobs can be: {', '.join(JOB_KINDS)}")
