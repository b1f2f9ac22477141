import pytest
import torch

from ivt_core.policy_gradient import advantages as group_advantages
from ivt_core.policy_gradient import grpo_loss, kl_per_token, token_logprobs
from ivt_core.rewards import final_iou_format, final_minus_degradation, fix_break, get_reward, improvement, mean_iou
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


def test_improvement_rewards_literal():
    assert improvement(traj([0.2, 0.6, 0.7])) == pytest.approx(0.5)
    assert improvement(traj([0.9, 0.3])) == pytest.approx(-0.6)
    assert fix_break(traj([0.2, 0.7])) == 1.0 and fix_break(traj([0.7, 0.2])) == -1.0
    assert fix_break(traj([0.7, 0.8])) == 0.0 and fix_break(traj([0.1, 0.2])) == 0.0


def test_scale_rewards_literal():
    rewards = torch.tensor([0.50, 0.51, 1.0, 3.0])
    group = group_advantages(rewards, 2, "group")
    assert torch.allclose(group, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=0.02)  # noise blown up to +-1
    none = group_advantages(rewards, 2, "none")
    assert torch.allclose(none, torch.tensor([-0.005, 0.005, -1.0, 1.0]), atol=1e-6)
    batch = group_advantages(rewards, 2, "batch")
    std = rewards.std(unbiased=False)
    assert torch.allclose(batch, none / (std + 1e-4), atol=1e-6)


def test_token_logprobs_divide_by_the_temperature():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 0]])
    hot, _ = token_logprobs(logits, labels, temperature=2.0)
    assert hot[0, 0].item() == pytest.approx(torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[0].item())


def test_loss_types_literal():
    policy = torch.zeros(2, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv = torch.tensor([1.0, 1.0])
    grpo, _ = grpo_loss(policy, policy, policy, mask, adv, 0.0, loss_type="grpo")
    dapo, _ = grpo_loss(policy, policy, policy, mask, adv, 0.0, loss_type="dapo")
    dr, _ = grpo_loss(policy, policy, policy, mask, adv, 0.0, loss_type="dr_grpo", max_tokens=4)
    # per-token loss is -1 (ratio 1, advantage 1): grpo -(1 + 1)/2; dapo -4/4; dr_grpo -4/(2 x 4)
    assert (grpo.item(), dapo.item(), dr.item()) == (-1.0, -1.0, -0.5)
    long_gets_more = torch.zeros(2, 3, requires_grad=True)
    loss, _ = grpo_loss(long_gets_more, long_gets_more.detach(), long_gets_more.detach(), mask, adv, 0.0,
                        loss_type="grpo")
    loss.backward()  # grpo weighs each sequence's tokens by 1/its length: the short answer's token counts more
    assert long_gets_more.grad[1, 0] == pytest.approx(-0.5) and long_gets_more.grad[0, 0] == pytest.approx(-0.5 / 3)


def test_micro_batches_add_up_to_the_batch_loss():
    policy = torch.tensor([[0.0, -1.0, -2.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([1.0, -0.5])
    for kind in ("grpo", "dapo", "dr_grpo"):
        whole, _ = grpo_loss(policy, policy - 0.1, policy, mask, adv, 0.1, loss_type=kind, max_tokens=3)
        parts = sum(grpo_loss(policy[i:i + 1], policy[i:i + 1] - 0.1, policy[i:i + 1], mask[i:i + 1], adv[i:i + 1],
                              0.1, loss_type=kind, max_tokens=3, total_tokens=5, total_sequences=2)[0]
                    for i in range(2))
        assert parts.item() == pytest.approx(whole.item()), kind


def test_clip_acts_once_the_policy_has_moved():
    old = torch.tensor([[-1.0]])
    moved = torch.tensor([[-0.5]], requires_grad=True)  # ratio e^0.5 = 1.65 > 1 + clip
    loss, _ = grpo_loss(moved, old, old, torch.tensor([[True]]), torch.tensor([1.0]), 0.0, clip=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-1.2) and moved.grad.item() == 0.0  # clipped: no further push
