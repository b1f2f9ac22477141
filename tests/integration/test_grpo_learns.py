"""GRPO learns a reachable task on the CPU: a tiny random Qwen3-VL is rewarded for the share of its sampled answer
tokens that lie in the lower half of the vocabulary. With the rollouts, advantages, masks and loss of the real
trainer (``training.grpo._trajectory_tensors``, ``ivt_core.policy_gradient``), the mean reward of the last steps
clearly beats the first; a flipped loss sign, zeroed advantages or masks that miss the sampled tokens fail it."""

import random
import statistics

import pytest
import torch
from PIL import Image

from ivt_core.boxes import Box
from ivt_core.config.training import GRPOConfig
from ivt_core.data.sample import Sample
from ivt_core.families import FAMILIES
from ivt_core.grounders.base import Sampling
from ivt_core.grounders.processing import load_processor
from ivt_core.grounders.transformers_grounder import TransformersGrounder
from ivt_core.loop import LoopConfig, run_samples
from ivt_core.policy_gradient import advantages, chunks, policy_update
from ivt_core.supervision import cpu_rope_index

STEPS, PROMPTS, GROUP, TOKENS = 12, 2, 8, 4


def _reward(trajectory, limit):
    answer = next(m for m in trajectory.conversation if m["role"] == "assistant")
    ids = [t for t in answer["token_ids"] if t < 1000][:TOKENS]  # the end token is not part of the score
    return sum(t < limit for t in ids) / max(1, len(ids))


def _train(model_dir, sign=1.0, zero_advantages=False):
    from transformers import AutoModelForImageTextToText

    from training.grpo import _trajectory_tensors

    torch.manual_seed(0)
    random.seed(0)
    processor = load_processor(model_dir, "qwen3_vl")
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32)
    model.generation_config.min_new_tokens = TOKENS  # random weights: keep the answers the same length
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    grounder = TransformersGrounder(model, processor, FAMILIES["qwen3_vl"], "policy", "cpu")
    loop = LoopConfig(steps=0, batch_size=PROMPTS * GROUP, engine="plain",
                      sampling=Sampling(max_new_tokens=TOKENS, do_sample=True, temperature=1.0))
    cfg = GRPOConfig(micro_batch=8)
    rope = cpu_rope_index(type(model.model), model.config)
    limit = len(processor.tokenizer) // 2
    image = Image.new("RGB", (64, 64), "white")
    samples = [Sample(f"s{i}", "d", "train", "", 64, 64, f"thing {i}", Box(0, 0, 10, 10)) for i in range(PROMPTS)]
    means = []
    for _ in range(STEPS):
        batch = [s for s in samples for _ in range(GROUP)]
        model.eval()
        trajectories = run_samples(grounder, batch, loop, [image] * len(batch), keep_conversations=True)
        rewards = torch.tensor([_reward(t, limit) for t in trajectories])
        means.append(rewards.mean().item())
        adv = sign * advantages(rewards, GROUP, "group") * (0.0 if zero_advantages else 1.0)
        batches = [_trajectory_tensors(processor, trajectories, chunk, cfg, rope, processor.tokenizer.pad_token_id)
                   for chunk in chunks(len(trajectories), cfg.micro_batch)]
        model.train()
        policy_update(lambda inputs: model(**inputs).logits, None, batches, adv, optimizer, beta=0.0, clip=0.2,
                      loss_type="grpo", num_iterations=2)
    return means


def _gain(means):
    quarter = max(2, len(means) // 4)
    return statistics.fmean(means[-quarter:]) - statistics.fmean(means[:quarter])


@pytest.fixture(scope="module")
def model_dir(tiny_models):
    return tiny_models["qwen3_vl"]


def test_grpo_raises_a_reachable_reward(model_dir):
    means = _train(model_dir)
    assert _gain(means) > 0.15, means


def test_a_flipped_loss_sign_lowers_it(model_dir):
    assert _gain(_train(model_dir, sign=-1.0)) < 0.0


def test_without_advantages_nothing_is_learned(model_dir):
    assert abs(_gain(_train(model_dir, zero_advantages=True))) < 0.1


def test_masks_that_miss_the_sampled_answers_learn_nothing(model_dir, monkeypatch):
    import training.grpo

    original = training.grpo._trajectory_tensors

    def step0_not_trained(processor, trajectories, chunk, cfg, rope, pad):  # only refinement turns: none here
        from dataclasses import replace

        return original(processor, trajectories, chunk, replace(cfg, train_turns="refinement"), rope, pad)

    monkeypatch.setattr(training.grpo, "_trajectory_tensors", step0_not_trained)
    assert abs(_gain(_train(model_dir))) < 0.1
