"""GRPO scores what it sampled: the sampled token ids (not the text tokenized again), no invented end token
after a truncated answer, and the same sampling distribution in the plain loop and the cached engine."""

import pytest
import torch
from PIL import Image

from ivt_core.grounders.base import Sampling
from ivt_core.grounders.processing import load_processor
from ivt_core.supervision import IGNORE, build_rollout_example

IMAGE = Image.new("RGB", (64, 64), "white")


def _conversation(first_ids, second_ids, end, truncated_second=True):
    return [
        {"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "find it"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "whatever the text says"}],
         "token_ids": [*first_ids, end], "truncated": False},
        {"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "again"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "cut"}], "token_ids": second_ids,
         "truncated": truncated_second},
    ]


@pytest.fixture(scope="module")
def processor(tiny_models):
    return load_processor(tiny_models["qwen3_vl"], "qwen3_vl")


def test_the_sampled_ids_are_what_is_scored(processor):
    end = processor.tokenizer.eos_token_id
    example = build_rollout_example(processor, _conversation([5, 6, 7], [8, 9], end), {1, 3})
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    assert [t for t in labels if t != IGNORE] == [5, 6, 7, end, 8, 9]
    cut = max(i for i, t in enumerate(labels) if t != IGNORE)  # the truncated answer's last sampled token
    assert ids[cut] == 9 and ids[cut + 1] == end and labels[cut + 1] == IGNORE  # the template's end: context only
    assert int((example["input_ids"] == processor.image_token_id).sum()) == int(example["mm_token_type_ids"].sum())


def test_truncated_answers_can_be_left_out(processor):
    end = processor.tokenizer.eos_token_id
    example = build_rollout_example(processor, _conversation([5], [8, 9], end), {1, 3}, drop_truncated=True)
    assert [t for t in example["labels"].tolist() if t != IGNORE] == [5, end]


def test_a_sampled_image_placeholder_voids_the_rollout(processor):
    end = processor.tokenizer.eos_token_id
    example = build_rollout_example(processor, _conversation([processor.image_token_id], [8], end), {1, 3})
    assert (example["labels"] == IGNORE).all()
    assert int((example["input_ids"] == processor.image_token_id).sum()) == int(example["mm_token_type_ids"].sum())


def test_the_plain_loop_samples_without_a_top_k_cut(tiny_models, monkeypatch):
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    grounder = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    seen = {}
    original = grounder.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(grounder.model, "generate", spy)
    conversation = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "x"}]}]
    answer = grounder.predict([conversation], Sampling(max_new_tokens=3, do_sample=True, temperature=0.7))[0]
    assert seen["top_k"] == 0 and seen["temperature"] == 0.7  # as the engine: temperature and top-p only
    assert 1 <= len(answer.token_ids) <= 3 and answer.tokens_out == len(answer.token_ids)
    assert answer.truncated == (processor_end(grounder) not in answer.token_ids)


def processor_end(grounder):
    return grounder.processor.tokenizer.eos_token_id


def test_the_engine_records_sampled_ids_and_truncation(tiny_models):
    from ivt_core.boxes import Box
    from ivt_core.data.sample import Sample
    from ivt_core.grounders.engine import supports
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_batch

    grounder = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    assert supports(grounder) is None
    sample = Sample("s", "d", "t", "", 64, 64, "thing", Box(0, 0, 9, 9))
    for engine in ("cached", "plain"):
        torch.manual_seed(0)
        trajectory = run_batch(grounder, [sample], LoopConfig(steps=1, engine=engine, sampling=Sampling(
            max_new_tokens=3, do_sample=True)), [IMAGE], keep_conversations=True)[0]
        answers = [m for m in trajectory.conversation if m["role"] == "assistant"]
        assert len(answers) == 2 and all(1 <= len(m["token_ids"]) <= 3 for m in answers), engine
        assert all(m["truncated"] == (processor_end(grounder) not in m["token_ids"]) for m in answers), engine
