"""GRPO rewards and the policy-gradient pieces, each a plain function tested on literal values.

Rewards read a recorded ``Trajectory`` (the same records and the same IoU the evaluation uses):

- ``final_iou_format`` (default, the paper's): final-step IoU + 0.1 x (share of answers with a readable box);
- ``mean_iou``: mean IoU over all steps;
- ``final_minus_degradation``: final IoU - 0.1 x (number of steps whose IoU fell by more than 0.05).

``group_advantages`` normalises rewards within each group of G rollouts of one prompt; ``kl_per_token`` is the
k3 estimator exp(ref - pol) - (ref - pol) - 1 (>= 0); ``grpo_loss`` is the clipped surrogate over the assistant
tokens of each trajectory plus beta x KL.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ivt_core.errors import InvalidInputError
from ivt_core.records import Trajectory

FORMAT_WEIGHT = 0.1
DEGRADE_BAND = 0.05


def final_iou_format(t: Trajectory) -> float:
    answered = t.steps[: t.stop_step + 1]
    readable = sum(s.parse_ok for s in answered) / len(answered) if answered else 0.0
    return t.final_iou + FORMAT_WEIGHT * readable


def mean_iou(t: Trajectory) -> float:
    answered = t.steps[: t.stop_step + 1]
    return sum(s.iou for s in answered) / len(answered) if answered else 0.0


def final_minus_degradation(t: Trajectory) -> float:
    ious = t.ious[: t.stop_step + 1]
    drops = sum(1 for a, b in zip(ious, ious[1:], strict=False) if a - b > DEGRADE_BAND)
    return t.final_iou - FORMAT_WEIGHT * drops


REWARDS: dict[str, Callable[[Trajectory], float]] = {
    "final_iou_format": final_iou_format,
    "mean_iou": mean_iou,
    "final_minus_degradation": final_minus_degradation,
}


def get_reward(name: str) -> Callable[[Trajectory], float]:
    if name not in REWARDS:
        raise InvalidInputError(f"unknown reward {name!r}; use one of {', '.join(REWARDS)}")
    return REWARDS[name]


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - group mean) / (group std + eps) for rewards laid out group after group."""
    if rewards.numel() % group_size:
        raise ValueError("rewards must be a whole number of groups")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=False, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def kl_per_token(policy_logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    diff = ref_logp - policy_logp
    return torch.exp(diff) - diff - 1


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the next tokens and the mask of trained positions (labels != -100), shifted."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    picked = torch.gather(torch.log_softmax(logits, dim=-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked, mask


def grpo_loss(policy_logp, old_logp, ref_logp, mask, advantages, beta: float, clip: float = 0.2):
    """Mean over trajectories of the masked token mean of -(clipped surrogate) + beta * KL; also returns the KL."""
    ratio = torch.exp(policy_logp - old_logp)
    adv = advantages.unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    kl = kl_per_token(policy_logp, ref_logp)
    per_token = -(surrogate - beta * kl)
    mask = mask.float()
    per_traj = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    kl_mean = ((kl * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    return per_traj.mean(), kl_mean
