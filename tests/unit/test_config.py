"""Typed configs: one definition per setting gives the flags, the checks, the file format and the job record."""

import argparse
import json

import pytest

from ivt_core.config import JOB_KINDS, job_config_class
from ivt_core.config.evaluation import EvalConfig
from ivt_core.config.flags import add_config_arguments, config_from_args, config_to_argv, parse_config
from ivt_core.config.settings import MAX_STEPS, check_settings, default_of, from_stored, stored
from ivt_core.config.synthesis import SynthConfig
from ivt_core.config.toy import ToyConfig
from ivt_core.config.training import GRPOConfig, SFTConfig
from ivt_core.errors import InvalidInputError

CONFIGS = (EvalConfig, SynthConfig, SFTConfig, GRPOConfig, ToyConfig)


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_setting_is_documented(cls):
    from dataclasses import fields

    undocumented = [f.name for f in fields(cls) if not f.metadata.get("help")]
    assert not undocumented


@pytest.mark.parametrize("cls", CONFIGS)
def test_defaults_pass_their_own_limits(cls):
    check_settings(cls())


def test_one_range_of_t_at_every_door():
    for cls in (EvalConfig, GRPOConfig):
        spec = next(f for f in __import__("dataclasses").fields(cls) if f.name == "steps")
        assert (spec.metadata["min"], spec.metadata["max"]) == (0, MAX_STEPS)
    with pytest.raises(InvalidInputError, match=f"steps must be between 0 and {MAX_STEPS}"):
        check_settings(EvalConfig(steps=MAX_STEPS + 1))
    from ivt_core.loop import LoopConfig

    with pytest.raises(InvalidInputError, match=f"{MAX_STEPS} or fewer"):
        LoopConfig(steps=MAX_STEPS + 1).check()


def test_flags_come_from_the_fields_with_their_types_and_spellings():
    config = _parse(EvalConfig, ["--steps", "3", "--4bit", "--batch-size", "auto", "--limit", "5", "--stop", "self"])
    assert (config.steps, config.load_in_4bit, config.batch_size, config.limit, config.stop) == (3, True, 0, 5, "self")
    assert _parse(SFTConfig, ["--lr", "1e-4", "--full-finetune"]).lr == 1e-4
    with pytest.raises(SystemExit):
        _parse(EvalConfig, ["--stop", "never"])  # choices come from the field


def test_a_config_file_then_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.0003\nlora_r: 8\n")
    (tmp_path / "c.json").write_text(json.dumps({"lr": 3e-4, "lora_r": 8}))
    for name in ("c.yaml", "c.json"):
        config = _parse(GRPOConfig, ["--config", str(tmp_path / name), "--lora-r", "4"])
        assert (config.lr, config.lora_r) == (3e-4, 4)


@pytest.mark.parametrize("text, message", [
    ("{nope", "not valid"), ('{"lr": 1e-4, "typo": 1}', "unknown GRPOConfig settings: typo"), ("[1]", "one object"),
])
def test_a_bad_config_file_says_what_to_fix(tmp_path, text, message):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        _parse(GRPOConfig, ["--config", str(tmp_path / "c.json")])


def test_a_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read config file"):
        _parse(GRPOConfig, ["--config", str(tmp_path / "absent.json")])


@pytest.mark.parametrize("config, message", [
    (EvalConfig(dataset="d", split="s", max_new_tokens=0), "max_new_tokens must be between 1"),
    (EvalConfig(dataset="d", split="s", stop="never"), "stop must be one of"),
    (EvalConfig(), "--dataset and --split are required"),
    (EvalConfig(dataset="d", split="s", model="/nonexistent"), "has no config.json"),
    (EvalConfig(dataset="d", split="s", load_in_4bit=True, device="cpu"), "needs a GPU"),
    (EvalConfig(dataset="d", split="s", endpoint="http://h:1/v1", verdict="derived"), "drop --verdict derived"),
    (EvalConfig(dataset="d", split="s", verdict="mine"), "verdict must be one of"),
    (SynthConfig(iou_low=0.9, iou_high=0.5), "--iou-low < --iou-high"),
    (SynthConfig(teacher="vlm"), "--teacher-model"),
    (SynthConfig(keep_ratio=float("nan")), "finite number"),
    (ToyConfig(hidden=100, heads=3), "divide"),
])
def test_cross_field_checks_say_how_to_fix(config, message):
    with pytest.raises(InvalidInputError, match=message):
        config.check()


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_a_job_config_round_trips_through_json_and_flags(kind):
    cls = job_config_class(kind)
    changed = {"eval": {"steps": 4, "load_in_4bit": True, "limit": 3}, "synth": {"run": 2, "confirm": True},
               "sft": {"lr": 1e-4, "full_finetune": True}, "grpo": {"beta": 0.0, "reward": "mean_iou"}}[kind]
    config = cls(**changed)
    assert from_stored(cls, json.loads(json.dumps(stored(config)))) == config
    assert parse_config(cls, config_to_argv(config), "test") == config


def test_secrets_are_never_stored_or_shown():
    config = SynthConfig(run=1, teacher_api_key="sk-secret")
    assert "teacher_api_key" not in stored(config) and "sk-secret" not in config_to_argv(config)


def test_unknown_job_kind_is_refused():
    with pytest.raises(InvalidInputError, match="jobs can be"):
        job_config_class("shell")


def test_trainer_defaults_differ_where_the_trainers_do():
    assert default_of(SFTConfig, "lr") == 2e-4 and default_of(GRPOConfig, "lr") == 0.0  # GRPO: by model size
    assert GRPOConfig().learning_rate(11_000_000) == 3e-4 and GRPOConfig().learning_rate(4_000_000_000) == 1e-5
    assert GRPOConfig(lr=5e-5).learning_rate(11_000_000) == 5e-5
