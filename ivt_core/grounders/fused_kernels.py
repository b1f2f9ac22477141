"""Fused GPU kernels for the Qwen3-VL language model, from Liger Kernel, where it is installed.

Why: profiled on an H200 (docs/LOG.md, session 8), the engine's prefill spent as much CUDA time in element-wise
kernels (RMSNorm computed in float32 with its casts, the rotary embedding, SiLU times the up projection) as in
its matrix products. Liger Kernel (``pip install liger-kernel``, the ``gpu`` extra) has one Triton kernel for each
of those: its RMSNorm in "llama" casting mode computes as transformers' Qwen3-VL norm does (float32 inside, the
weight applied after casting back), its rotary kernel takes the (batch, tokens, head dim) cosines the model's
multimodal rotary embedding gives, and its SiLU-and-multiply replaces the MLP's two element-wise passes. The
vision tower's rotary embedding (transformers' ``apply_rotary_pos_emb_vision``: q and k cast to float32, seven
element-wise passes over every patch of every image at every layer, then cast back) gets the same rotary kernel,
which also computes in float32 when given float32 cosines and writes q's dtype (``_vision_rotary``).
The pieces are put on as Liger's ``apply_liger_kernel_to_qwen3_vl`` does (its ``_patch_rms_norm_module`` on
every norm of the language model, its rotary function in place of transformers' module-level one, and its
``LigerSwiGLUMLP.forward`` bound to the MLPs, whose parameter names are the same), but not through that function:
in liger-kernel 0.8.5 with transformers 5.23 it fails importing its Qwen3-VL output class (loss code the engine
does not use). Nothing here is written by hand beyond choosing which of Liger's pieces go where.

Applied only on CUDA (Triton), only to Qwen3-VL models, and never on the CPU (CI): there the model is as
transformers builds it. Liger's rotary patch is module-wide (every Qwen3-VL model in the process, training
included: its kernels have backward passes). ``IVT_FUSED_KERNELS=0`` turns it off (benchmarks compare both).
"""

from __future__ import annotations

import os
import types

from ivt_core import logs

SWITCH = "IVT_FUSED_KERNELS"
log = logs.get(__name__)


def why_not(model) -> str | None:
    """None if the fused kernels can be put on ``model``, else why not."""
    if os.environ.get(SWITCH, "1") == "0":
        return f"{SWITCH}=0"
    try:
        device = next(model.parameters()).device
    except StopIteration:
        return "a model without parameters"
    if device.type != "cuda":
        return f"the model is on {device.type} (Triton kernels need a GPU)"
    if getattr(getattr(model, "config", None), "model_type", None) != "qwen3_vl":
        return f"model type {getattr(model.config, 'model_type', None)!r} (only qwen3_vl)"
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError as exc:
        return f"liger-kernel is not installed ({exc.name or exc})"
    return None


def enable_fused_kernels(model) -> list[str]:
    """Put Liger's RMSNorm, rotary and SwiGLU kernels on a Qwen3-VL model on a GPU; returns what was fused
    (empty, with the reason logged, when nothing was: a CPU, another family, no liger-kernel)."""
    reason = why_not(model)
    if reason:
        log.info("fused kernels: off (%s)", reason)
        return []
    from liger_kernel.transformers.monkey_patch import _patch_rms_norm_module
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from ivt_core.grounders.engine import _inner_model

    text = _inner_model(model).language_model
    modeling_qwen3_vl.apply_rotary_pos_emb = liger_rotary_pos_emb  # what the attention calls, module-wide
    modeling_qwen3_vl.apply_rotary_pos_emb_vision = _vision_rotary  # the vision attention's (fast_vision's too)
    norms = [text.norm]
    mlps = 0
    for layer in text.layers:
        attention = layer.self_attn
        norms += [layer.input_layernorm, layer.post_attention_layernorm,
                  *(n for n in (getattr(attention, "q_norm", None), getattr(attention, "k_norm", None))
                    if n is not None)]
        mlp = layer.mlp
        if getattr(mlp.config, "hidden_act", None) in ("silu", "swish") and hasattr(mlp, "gate_proj"):
            mlp.forward = types.MethodType(LigerSwiGLUMLP.forward, mlp)
            mlps += 1
    for norm in norms:
        _patch_rms_norm_module(norm, offset=0.0, casting_mode="llama")
    fused = ["rms_norm", "rotary", "vision_rotary", *(["swiglu"] if mlps else [])]
    model.ivt_fused_kernels = fused  # what ``fused_on`` reports (benchmarks write it with their figures)
    log.info("fused kernels: %s (liger-kernel)", ", ".join(fused))
    return fused


def _vision_rotary(q, k, cos, sin):
    """Liger's rotary kernel in the vision attention's layout: q, k [patches, heads, head dim], cos, sin
    [patches, head dim] (the duplicated layout ``rotate_half`` assumes), computed in float32 as transformers'
    ``apply_rotary_pos_emb_vision`` does, returned in q's and k's dtype."""
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    q4, k4 = liger_rotary_pos_emb(q.unsqueeze(0).transpose(1, 2), k.unsqueeze(0).transpose(1, 2),
                                  cos.float(), sin.float())
    return q4.transpose(1, 2)[0], k4.transpose(1, 2)[0]


def fused_on(model) -> list[str]:
    """The fused kernels ``enable_fused_kernels`` put on ``model`` (empty: none)."""
    return list(getattr(model, "ivt_fused_kernels", []))
