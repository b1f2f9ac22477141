import pytest
import torch

from ivt_core.rewards import (
    final_iou_format,
    final_minus_degradation,
    get_reward,
    group_advantages,
    grpo_loss,
    kl_per_token,
    mean_iou,
    token_logprobs,
)
from tests.helpers import step, traj


def test_rewards_literal():
    t = traj([0.2, 0.6, 0.4])
    assert final_iou_format(t) == pytest.approx(0.4 + 0.1)
    assert mean_iou(t) == pytest.approx(0.4)
    assert final_minus_degradation(t) == pytest.approx(0.4 - 0.1)
    t.steps[2] = step(2, 0.0, ok=False)
    assert final_iou_format(t) == pytest.approx(0.0 + 0.1 * 2 / 3)
    with pytest.raises(Exception, match="unknown reward"):
        get_reward("bleu")


def test_group_advantages_literal():
    adv = group_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2)
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, 0.0, 0.0]), atol=1e-3)


def test_kl_is_zero_when_equal_and_positive_otherwise():
    p = torch.tensor([[-1.0, -2.0]])
    assert torch.allclose(kl_per_token(p, p), torch.zeros(1, 2))
    assert (kl_per_token(p, p - 0.5) > 0).all()


def test_token_logprobs_shift_and_mask():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0
    logp, mask = token_logprobs(logits, torch.tensor([[-100, 2, -100]]))
    assert mask.tolist() == [[True, False]] and logp[0, 0] > -0.01


def test_loss_pushes_up_positive_advantage_tokens():
    policy = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    loss, kl = grpo_loss(policy, policy.detach(), policy.detach(), torch.tensor([[True, False]]),
                         torch.tensor([1.0]), beta=0.04)
    loss.backward()
    assert kl.item() == 0.0 and policy.grad[0, 0] < 0 and policy.grad[0, 1] == 0
