"""The cached engine's decode attention on a GPU: one query token per row against the row's cache, in Triton.

Why hand-written: profiled on an H200 (docs/LOG.md, session 13) the decode's attention took about half of every
decode step, at ~2x the time it takes to read the keys and values once. SDPA's kernels for a one-token query with
a mask are cuDNN's flash kernel (transformers packs the 4 query heads of a key/value head into a 4-row query, in
a 64-row tile), the memory-efficient kernel (slower, measured) and the math kernel (scores materialised: 5x
slower); FlashAttention's ``flash_attn_with_kvcache`` (the usual split-KV decode kernel) is not a dependency and
takes no mask over a cache with holes, which the engine's compacted rows have. This kernel reads each row's keys
and values once per key/value head for all of its query heads (grouped-query attention without repeating heads),
reads only the live slots (the loads of masked slots are masked off, so rows shorter than the cache's width, the
holes and the room not yet written cost no memory traffic) and computes the softmax online in float32; on few
rows it splits the cache into parts read in parallel and merges them (flash-decoding), so a small batch still
fills the GPU.

Used through transformers' attention interface: ``enable_decode_attention`` registers ``ivt_sdpa`` (this kernel
for a one-token query with a boolean mask on CUDA, ``prefill_attention``'s for the engine's prefill blocks,
transformers' SDPA function for everything else) and sets it on the language model only. Off on the CPU (CI),
without Triton, and with ``IVT_DECODE_KERNEL=0`` (both kernels then; benchmarks compare). Tested equal to SDPA
(CPU in Triton's interpreter where Triton is installed; the GPU tier on CUDA).
"""

from __future__ import annotations

import os

import torch

from ivt_core import logs
from ivt_core.grounders import prefill_attention
from ivt_core.grounders.online_softmax import LOG2E, START, step, tl, triton

SWITCH = "IVT_DECODE_KERNEL"
NAME = "ivt_sdpa"
BLOCK_N = 32  # cache slots per inner step
# Triton's launch settings: on an H200 at 256 rows x 900 slots, (32, 4, 3) 0.232 ms against 0.245 for (64, 4, 3) and
# 0.230 for the fastest of 27 (``benchmarks/decode_attention.py --sweep``, docs/LOG.md session 14)
WARPS, STAGES = 4, 3
MIN_PROGRAMS = 512  # split the cache until (rows x key/value heads x splits) reaches this (~4 per SM on an H200)
log = logs.get(__name__)

if triton is not None:

    @triton.jit
    def _decode_kernel(q, k, v, live, out, part_acc, part_ml, scale_log2,
                       stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                       stride_lb, stride_ln, capacity, per_split,
                       KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, DIM: tl.constexpr,
                       BLOCK: tl.constexpr, SPLITS: tl.constexpr, PRECISION: tl.constexpr):
        pair = tl.program_id(0)  # (row, key/value head)
        split = tl.program_id(1)
        row = pair // KV_HEADS
        head = pair % KV_HEADS
        heads = tl.arange(0, GROUP_PAD)
        dims = tl.arange(0, DIM)
        in_group = heads < GROUP
        query = tl.load(q + row * stride_qb + (head * GROUP + heads)[:, None] * stride_qh + dims[None, :],
                        mask=in_group[:, None], other=0.0)
        best = tl.full([GROUP_PAD], START, tl.float32)
        total = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, DIM], tl.float32)
        begin = split * per_split  # per_split: a multiple of BLOCK
        for offset in range(0, per_split, BLOCK):
            slots = begin + offset + tl.arange(0, BLOCK)
            inside = slots < capacity
            open_ = tl.load(live + row * stride_lb + slots * stride_ln, mask=inside, other=0) != 0
            # only live slots are read: a masked-off load moves no memory (left padding, holes, room not written)
            keys = tl.load(k + row * stride_kb + head * stride_kh + slots[:, None] * stride_kn + dims[None, :],
                           mask=open_[:, None], other=0.0)
            values = tl.load(v + row * stride_vb + head * stride_vh + slots[:, None] * stride_vn + dims[None, :],
                             mask=open_[:, None], other=0.0)
            best, total, acc = step(query, keys, values, open_[None, :], best, total, acc, scale_log2, PRECISION)
        if SPLITS == 1:
            result = acc / tl.where(total == 0.0, 1.0, total)[:, None]
            tl.store(out + (row * KV_HEADS * GROUP + head * GROUP + heads)[:, None] * DIM + dims[None, :],
                     result.to(out.dtype.element_ty), mask=in_group[:, None])
        else:
            base = (pair * SPLITS + split) * GROUP_PAD
            tl.store(part_acc + (base + heads)[:, None] * DIM + dims[None, :], acc)
            tl.store(part_ml + (base + heads) * 2, best)
            tl.store(part_ml + (base + heads) * 2 + 1, total)

    @triton.jit
    def _merge_kernel(part_acc, part_ml, out, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                      GROUP_PAD: tl.constexpr, DIM: tl.constexpr, SPLITS: tl.constexpr):
        pair = tl.program_id(0)
        heads = tl.arange(0, GROUP_PAD)
        dims = tl.arange(0, DIM)
        best = tl.full([GROUP_PAD], START, tl.float32)
        for split in range(SPLITS):
            base = (pair * SPLITS + split) * GROUP_PAD
            best = tl.maximum(best, tl.load(part_ml + (base + heads) * 2))
        total = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, DIM], tl.float32)
        for split in range(SPLITS):  # each part's running maximum is in base 2 (``online_softmax``)
            base = (pair * SPLITS + split) * GROUP_PAD
            weight = tl.exp2(tl.load(part_ml + (base + heads) * 2) - best)
            total += weight * tl.load(part_ml + (base + heads) * 2 + 1)
            acc += weight[:, None] * tl.load(part_acc + (base + heads)[:, None] * DIM + dims[None, :])
        result = acc / tl.where(total == 0.0, 1.0, total)[:, None]
        row = pair // KV_HEADS
        head = pair % KV_HEADS
        tl.store(out + (row * KV_HEADS * GROUP + head * GROUP + heads)[:, None] * DIM + dims[None, :],
                 result.to(out.dtype.element_ty), mask=(heads < GROUP)[:, None])


def splits_for(rows: int, kv_heads: int, capacity: int, block: int = BLOCK_N) -> int:
    """How many parts each row's cache is read in: enough for ``MIN_PROGRAMS`` programs, each part at least one
    block, a power of two."""
    splits = 1
    while rows * kv_heads * splits < MIN_PROGRAMS and capacity > 2 * splits * block:
        splits *= 2
    return splits


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, live: torch.Tensor,
                     scale: float, block: int = BLOCK_N, warps: int = WARPS, stages: int = STAGES) -> torch.Tensor:
    """Attention of one query token per row: ``query`` [rows, heads, 1, dim], ``key`` / ``value`` [rows, kv heads,
    capacity, dim], ``live`` [rows, capacity] (bool: the slots each row may attend to). Returns [rows, 1, heads,
    dim] (transformers' layout after attention). A row with no live slot gets zeros."""
    rows, heads, _, dim = query.shape
    kv_heads, capacity = key.shape[1], key.shape[2]
    group = heads // kv_heads
    group_pad = max(16, triton.next_power_of_2(group))  # tl.dot needs 16 rows
    splits = splits_for(rows, kv_heads, capacity, block)
    per_split = triton.cdiv(triton.cdiv(capacity, splits), block) * block
    out = torch.empty(rows, 1, heads, dim, dtype=query.dtype, device=query.device)
    if splits > 1:
        part_acc = torch.empty(rows * kv_heads * splits * group_pad, dim, dtype=torch.float32, device=query.device)
        part_ml = torch.empty(rows * kv_heads * splits * group_pad, 2, dtype=torch.float32, device=query.device)
    else:
        part_acc = part_ml = out  # not written
    live = live.view(torch.uint8) if live.dtype == torch.bool else live
    _decode_kernel[(rows * kv_heads, splits)](
        query, key, value, live, out, part_acc, part_ml, scale * LOG2E,
        query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2), live.stride(0), live.stride(1), capacity, per_split,
        KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=group_pad, DIM=dim, BLOCK=block, SPLITS=splits,
        # float32 (a model in float32: the tests) in full precision, not TF32's 10-bit products
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32", num_warps=warps, num_stages=stages)
    if splits > 1:
        _merge_kernel[(rows * kv_heads,)](part_acc, part_ml, out, KV_HEADS=kv_heads, GROUP=group,
                                          GROUP_PAD=group_pad, DIM=dim, SPLITS=splits)
    return out


def _fits(module, query, key, attention_mask) -> bool:
    """Whether this call is a decode step this kernel computes: one query token, a boolean [rows, 1, 1, capacity]
    mask, a head size Triton tiles (a power of two), no dropout, on CUDA (or anywhere in Triton's interpreter)."""
    return (query.shape[2] == 1 and attention_mask is not None and attention_mask.dtype == torch.bool
            and attention_mask.dim() == 4 and attention_mask.shape[1] == 1 and attention_mask.shape[2] == 1
            and attention_mask.shape[0] == query.shape[0] and query.shape[1] % key.shape[1] == 0
            and query.shape[-1] in (64, 128, 256) and not module.training
            and (query.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"))


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              **kwargs):
    """transformers' attention interface: this kernel for a decode step, ``prefill_attention``'s for the engine's
    prefill (``ivt_prefill`` given; no dropout, sliding window, soft cap or position bias), transformers' SDPA
    otherwise."""
    rows = kwargs.pop("ivt_prefill", None)  # the engine's prefill: its rows' live slots (``prefill_attention``)
    plain = dropout == 0.0 and all(kwargs.get(name) is None for name in ("sliding_window", "softcap", "position_bias"))
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if plain and _fits(module, query, key, attention_mask):
        return decode_attention(query, key, value, attention_mask[:, 0, 0, :], scale), None
    if plain and query.shape[2] > 1 and prefill_attention.fits(module, query, key, value, rows):
        return prefill_attention.prefill_attention(query, key, value, rows, scale), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def why_not(model) -> str | None:
    """None if the decode kernel can be put on ``model``, else why not."""
    if os.environ.get(SWITCH, "1") == "0":
        return f"{SWITCH}=0"
    if triton is None:
        return "Triton is not installed"
    try:
        device = next(model.parameters()).device
    except StopIteration:
        return "a model without parameters"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"the model is on {device.type} (Triton kernels need a GPU)"
    text = model.config.get_text_config()
    if getattr(text, "_attn_implementation", None) not in ("sdpa", NAME):
        return f"the language model's attention is {getattr(text, '_attn_implementation', None)!r}, not sdpa"
    return None


def enable_decode_attention(model) -> bool:
    """Register ``ivt_sdpa`` with transformers and set it on ``model``'s language model; False (the reason
    logged) where it cannot be (a CPU, no Triton, another attention implementation, the switch off)."""
    reason = why_not(model)
    if reason:
        log.info("decode attention kernel: off (%s)", reason)
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    text = model.config.get_text_config()
    text._attn_implementation = NAME
    log.info("decode attention kernel: on")
    return True
