"""The vision tower's attention in one batched call, and its patch embedding as one matrix product.

Why: with SDPA, transformers' Qwen3-VL / Qwen2.5-VL vision attention splits the packed patch sequence per image
and calls attention once per image, per layer. At batch 256 that is thousands of tiny kernels per step, and it
made toy pretraining GPU-bound on launch overhead (4 steps/s on an H100-class GPU for an 11 M model). When all
images in the batch have the same patch count (a scene world of fixed size, a batch of equal-size renders) the
per-image attentions are one batched attention over a (images, heads, patches, dim) tensor: same numbers, one
call. Other batches fall back to the stock code. ``enable_batched_vision_attention(model)`` patches that model's
vision attention modules only (instances, not classes).

The patch embedding is a ``Conv3d`` whose kernel is its stride and the whole of its input (one patch, channels x
frames x height x width): each output is the dot product of the flattened patch with the flattened kernel, a
linear layer over the rows ``pixel_values`` already holds. On an H200 cuDNN ran that convolution in bfloat16 as
``implicit_convolveNd_sgemm`` at ~21 TFLOP/s (45 ms per prefill of 256 images, 8 % of the vision tower's
kernel time: docs/LOG.md); as a matrix product over the same weights (a view: training updates the convolution's
own parameters) it is one GEMM.

The vision MLP's first product and its GELU (tanh approximation, ``gelu_pytorch_tanh``: Qwen3-VL's vision
``hidden_act``; Qwen2.5-VL's vision MLP is gated, and left as it is) as one cuBLASLt call with the GELU in the
product's epilogue (``torch._addmm_activation(..., use_gelu=True)``, PyTorch's own fused op, which falls back to
the product and ``gelu(approximate="tanh")`` where cuBLASLt cannot take it): the activation is never written and
read back (4096 values per patch per layer, a read and a write of 2.4 GB per 256 images per step for the 4B's
24 layers).
On CUDA in inference only (training keeps the stock module, whose backward is the one tested); the CPU keeps the
stock code too. ``enable_fast_vision(model)`` puts on all three.
"""

from __future__ import annotations

import os
import sys
import types

import torch
import torch.nn.functional as F


def _batched_forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    n = int(lengths.numel())
    seq_length = hidden_states.shape[0]
    if n == 0 or seq_length % n or int(lengths.min()) != int(lengths.max()):
        return self._ivt_stock_forward(hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
    q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    rotary = sys.modules[self._ivt_modeling].apply_rotary_pos_emb_vision  # per call: fused_kernels may replace it
    q, k = rotary(q, k, cos, sin)
    per = seq_length // n
    q, k, v = (t.reshape(n, per, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)
    return self.proj(out.transpose(1, 2).reshape(seq_length, -1))


def _linear_patch_embed(self, hidden_states: torch.Tensor) -> torch.Tensor:
    weight = self.proj.weight
    rows = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
    return F.linear(rows, weight.reshape(weight.shape[0], -1), self.proj.bias)


def _gelu_mlp_forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
    if self.training or not hidden_state.is_cuda or hidden_state.dim() != 2 or torch.is_grad_enabled():
        return self._ivt_stock_forward(hidden_state)
    fc1, fc2 = self.linear_fc1, self.linear_fc2
    inner = torch._addmm_activation(fc1.bias, hidden_state, fc1.weight.t(), use_gelu=True)
    return F.linear(inner, fc2.weight, fc2.bias)


def enable_fast_vision(model: torch.nn.Module) -> int:
    """The batched vision attention, the patch embedding as a matrix product and the vision MLP's GELU in its first
    product on ``model`` (its modules only); how many modules were patched."""
    return enable_batched_vision_attention(model) + enable_linear_patch_embed(model) + enable_gelu_epilogue(model)


def enable_gelu_epilogue(model: torch.nn.Module) -> int:
    """Patch the vision MLPs (``linear_fc1``, tanh GELU, ``linear_fc2``, both with biases); how many were patched.
    ``IVT_GELU_EPILOGUE=0`` leaves them as they are (benchmarks compare)."""
    if os.environ.get("IVT_GELU_EPILOGUE", "1") == "0":
        return 0
    patched = 0
    for module in model.modules():
        if not type(module).__name__.endswith("VisionMLP") or hasattr(module, "_ivt_stock_forward"):
            continue  # not a vision MLP, or patched already (its stock forward must stay the stock one)
        fc1, fc2 = getattr(module, "linear_fc1", None), getattr(module, "linear_fc2", None)
        act = getattr(getattr(module, "act_fn", None), "act", None)  # transformers' GELUTanh: a partial of gelu
        tanh_gelu = getattr(act, "func", None) is F.gelu and getattr(act, "keywords", None) == {"approximate": "tanh"}
        if not (isinstance(fc1, torch.nn.Linear) and isinstance(fc2, torch.nn.Linear) and fc1.bias is not None
                and tanh_gelu):
            continue
        module._ivt_stock_forward = module.forward
        module.forward = types.MethodType(_gelu_mlp_forward, module)
        patched += 1
    return patched


def enable_linear_patch_embed(model: torch.nn.Module) -> int:
    """Patch the vision patch embeddings whose convolution covers exactly one patch; how many were patched."""
    patched = 0
    for module in model.modules():
        proj = getattr(module, "proj", None)
        if not type(module).__name__.endswith("VisionPatchEmbed") or not isinstance(proj, torch.nn.Conv3d):
            continue
        if tuple(proj.kernel_size) != tuple(proj.stride) or proj.padding != (0, 0, 0) or proj.groups != 1 \
                or proj.dilation != (1, 1, 1):
            continue
        module.forward = types.MethodType(_linear_patch_embed, module)
        patched += 1
    return patched


def enable_batched_vision_attention(model: torch.nn.Module) -> int:
    """Patch the vision attention modules of a Qwen3-VL / Qwen2.5-VL model; returns how many were patched.

    Modules whose config asks for flash attention keep their own (already batched) code.
    """
    patched = 0
    for module in model.modules():
        name = type(module).__name__
        if not name.endswith("VisionAttention") or not hasattr(module, "qkv") or hasattr(module, "_ivt_stock_forward"):
            continue  # not a vision attention, or patched already (its stock forward must stay the stock one)
        impl = getattr(getattr(module, "config", None), "_attn_implementation", "sdpa") or "sdpa"
        if "flash" in impl:
            continue
        modeling = __import__(type(module).__module__, fromlist=["x"])
        if getattr(modeling, "apply_rotary_pos_emb_vision", None) is None:
            continue
        module._ivt_modeling = modeling.__name__
        module._ivt_stock_forward = module.forward
        module.forward = types.MethodType(_batched_forward, module)
        patched += 1
    return patched
