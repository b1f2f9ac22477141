"""The pieces of a GRPO update, each a plain function tested on literal tensors, with TRL's ``GRPOConfig``
names and semantics where TRL has them.

- ``advantages``: r - mean of the prompt's group, divided by the group's std (``scale_rewards="group"``), the
  whole batch's std (``"batch"``) or nothing (``"none"``: a near-zero group std otherwise turns the noise of
  nearly equal rewards into full-size advantages);
- ``token_logprobs``: log-probabilities of the labelled next tokens from logits divided by the sampling
  temperature (the distribution the rollouts were drawn from);
- ``kl_per_token``: the k3 estimator exp(ref - pol) - (ref - pol) - 1 (>= 0);
- ``grpo_loss``: the clipped surrogate plus beta x KL, aggregated as ``loss_type`` says: ``grpo`` (each
  sequence's token mean, then the mean over sequences), ``dapo`` (the mean over every trained token of the
  batch) or ``dr_grpo`` (the token sum divided by sequences x a fixed maximum length);
- ``policy_update``: ``num_iterations`` optimisation passes over one batch of rollouts, the old policy's
  log-probabilities taken before the first, so that the ratio, and with it ``clip``, acts from the second pass.

Why hand-written rather than TRL's trainer: see ``training/grpo.py`` (multi-turn rollouts with rendered images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4


def advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str = "group") -> torch.Tensor:
    """Group-relative advantages of rewards laid out group after group (G rollouts of one prompt each)."""
    if rewards.numel() % group_size:
        raise ValueError("rewards must be a whole number of groups")
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}")
    grouped = rewards.view(-1, group_size).float()
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + STD_EPS)
    elif scale_rewards == "batch":
        centred = centred / (grouped.std(unbiased=False) + STD_EPS)
    return centred.view(-1)


def kl_per_token(policy_logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    diff = ref_logp - policy_logp
    return torch.exp(diff) - diff - 1


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor,
                   temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the next tokens under ``logits / temperature``, and the mask of trained positions
    (labels != -100), shifted by one."""
    logits, labels = logits[:, :-1].float() / temperature, labels[:, 1:]
    mask = labels != -100
    picked = torch.gather(torch.log_softmax(logits, dim=-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked, mask


def grpo_loss(policy_logp, old_logp, ref_logp, mask, advantages, beta: float, clip: float = 0.2,
              loss_type: str = "grpo", max_tokens: int | None = None, total_tokens: int | None = None,
              total_sequences: int | None = None):
    """-(clipped surrogate) + beta x KL over the masked tokens, aggregated by ``loss_type``; also the mean KL.

    A batch split into micro-batches passes the whole batch's ``total_tokens`` (dapo) and ``total_sequences``
    (grpo, dr_grpo), so that the micro-batch losses add up to the batch's loss; by default the micro-batch is
    the batch. ``max_tokens``: dr_grpo's fixed length (default: the longest sequence here).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}")
    ratio = torch.exp(policy_logp - old_logp)
    adv = advantages.unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    kl = kl_per_token(policy_logp, ref_logp)
    per_token = -(surrogate - beta * kl) * mask.float()
    mask = mask.float()
    sequences = total_sequences or mask.shape[0]
    if loss_type == "grpo":
        loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).sum() / sequences
    elif loss_type == "dapo":
        loss = per_token.sum() / max(1, total_tokens or int(mask.sum().item()))
    else:
        loss = per_token.sum() / (sequences * (max_tokens or mask.shape[1]))
    kl_mean = ((kl * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    return loss, kl_mean


def policy_update(policy: Callable[[dict], torch.Tensor], reference: Callable[[dict], torch.Tensor] | None,
                  batches: list[dict], advantages: torch.Tensor, optimizer, *, beta: float, clip: float,
                  loss_type: str = "grpo", num_iterations: int = 1, temperature: float = 1.0,
                  max_tokens: int | None = None, backward: Callable | None = None,
                  before_step: Callable | None = None, device=None) -> dict:
    """Optimise the policy on one batch of rollouts, ``num_iterations`` times; return mean KL and loss.

    ``batches``: micro-batches of model inputs, each with ``labels`` (-100 where no loss) and ``index`` (the
    rollouts it holds, to pick their advantages). ``policy`` / ``reference`` map inputs to logits (``reference``
    None: beta must be 0). ``backward``: how to back-propagate (accelerate's, under DDP); ``before_step``: e.g.
    gradient clipping; ``device``: where each micro-batch is moved when it is used (they may wait on the CPU).
    """
    if reference is None and beta:
        raise ValueError("a KL penalty (beta > 0) needs the reference model")
    backward = backward or (lambda loss: loss.backward())
    total_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    total_sequences = sum(len(b["index"]) for b in batches)
    fixed: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
    with torch.no_grad():
        for batch in batches:  # the old policy (for the ratio) and the reference, before any update; with one
            inputs, labels = _inputs(batch, device)  # iteration the old policy is the policy itself (detached)
            old = token_logprobs(policy(inputs), labels, temperature)[0] if num_iterations > 1 else None
            ref = token_logprobs(reference(inputs), labels, temperature)[0] if reference else None
            fixed.append((old, ref))
    kls, losses = [], []
    for iteration in range(num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for batch, (old, ref) in zip(batches, fixed, strict=True):
            inputs, labels = _inputs(batch, device)
            logp, mask = token_logprobs(policy(inputs), labels, temperature)
            before = old if old is not None else logp.detach()
            loss, kl = grpo_loss(logp, before, ref if ref is not None else before, mask,
                                 advantages[batch["index"]].to(logp.device), beta, clip, loss_type, max_tokens,
                                 total_tokens, total_sequences)
            backward(loss)
            if iteration == 0:
                kls.append(kl.item())
            losses.append(loss.item())
        if before_step:
            before_step()
        optimizer.step()
    return {"kl": sum(kls) / max(1, len(kls)), "loss": sum(losses) / max(1, num_iterations)}


def _inputs(batch: dict, device) -> tuple[dict, torch.Tensor]:
    moved = {k: (v.to(device) if device is not None else v) for k, v in batch.items() if k != "index"}
    return {k: v for k, v in moved.items() if k != "labels"}, moved["labels"]


def chunks(n: int, size: int) -> Iterable[list[int]]:
    """Index lists of ``size`` (the last may be shorter) covering 0..n-1."""
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))
