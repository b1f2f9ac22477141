"""The cached engine's prefill attention on a GPU: a block of new tokens per row against the row's cache, in Triton.

Why hand-written: the engine's prefill block attends to each row's live cache slots (left padding and holes
excluded) and causally within the block. Handed to SDPA, that is a dense boolean mask [rows, 1, block, slots],
and SDPA's only kernel that takes such a mask with grouped key/value heads on Hopper is cuDNN's: ~250 TFLOP/s
on the engine's shapes (``benchmarks/attention_prefill.py``, docs/LOG.md session 15), an execution plan built on
the CPU for every new shape (42-74 ms each, the GPU idle meanwhile), and every query tile reads its mask tile.
The memory-efficient kernel takes no grouped heads (3x slower with them repeated), and torch's ``varlen_attn``
(flash, packed sequences) took no grouped heads either and needs the live keys packed first. The mask has a
structure, though: query ``i`` of the block (cache slot ``end + i``) sees slot ``j`` if ``j`` is live and
``j <= end + i``. This kernel takes exactly that: the rows' live mask [rows, slots] (one byte per slot, as the
decode kernel reads it) and ``end``; each program computes the query heads of one key/value head (grouped-query
attention: the keys and values read once for the group, never repeated) over a tile of the block's positions, with
flash attention's online softmax (``online_softmax.step``, float32 inside), starts at the row's first live slot,
tests causality only on the slots from the block's start on, stops at the tile's causal end (no work on the left
padding or on the block's later part), and loads only live slots (a dead slot's keys and values are never read, so
whatever they hold changes nothing). No plan, no per-shape compilation: the shapes are runtime arguments.

Used through ``decode_attention.attention`` (the ``ivt_sdpa`` attention function): the engine passes the chunk's
live rows and ``end`` as the keyword argument ``ivt_prefill`` (``PrefillRows``), which transformers hands through
to the attention function; without it (the plain path, training) or off the GPU, SDPA as before. Off with
``IVT_PREFILL_KERNEL=0`` (benchmarks compare both). Tested equal to SDPA on the GPU tier (float32 and bf16) and
in Triton's interpreter where Triton is installed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ivt_core.grounders.online_softmax import LOG2E, START, step, tl, triton

SWITCH = "IVT_PREFILL_KERNEL"
# (query positions per tile, slots per inner step, warps, stages) by the inputs' element size; a tile holds its
# positions' query heads of one key/value head (4 at Qwen3-VL's 32/8), so 16 positions make a 64-row tile.
# 16-bit: the fastest on an H200 (``benchmarks/attention_prefill.py --rows 32 --history 1000 --new 400 --sweep``,
# the engine's chunk; docs/LOG.md, session 18); float32 (the tests' models) small enough for its registers
TILES = {2: (16, 32, 4, 3), 4: (8, 32, 4, 2)}


@dataclass(frozen=True)
class PrefillRows:
    """What the prefill kernel needs to know of a chunk's rows: ``live`` [rows, slots] (bool or uint8; the slots a
    query may attend to, the block's real tokens included), ``end`` (the block's first slot: query ``i`` is slot
    ``end + i``) and ``first`` [rows] (int32, each row's first live slot; work starts there)."""

    live: torch.Tensor
    end: int
    first: torch.Tensor

    @classmethod
    def of(cls, live: torch.Tensor, end: int) -> PrefillRows:
        """From the rows' live mask; ``first`` computed on the device (no read back)."""
        as_bytes = live.view(torch.uint8) if live.dtype == torch.bool else live
        return cls(as_bytes, end, torch.argmax(as_bytes, dim=1).to(torch.int32))  # argmax: the first maximum


if triton is not None:

    @triton.jit
    def _prefill_kernel(q, k, v, live, first, out, scale_log2, end, width, keys,
                        stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                        stride_vn, stride_lb, stride_ob, stride_om, stride_oh,
                        KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, DIM: tl.constexpr,
                        BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
        tile = tl.program_id(0)
        pair = tl.program_id(1)  # (row, key/value head)
        row = pair // KV_HEADS
        kv = pair % KV_HEADS
        lines = tl.arange(0, BLOCK_Q * GROUP_PAD)  # (query position, head of the group), the head fastest
        queries = tile * BLOCK_Q + lines // GROUP_PAD
        heads = kv * GROUP + lines % GROUP_PAD
        real = (queries < width) & (lines % GROUP_PAD < GROUP)
        dims = tl.arange(0, DIM)
        query = tl.load(q + row * stride_qb + heads[:, None] * stride_qh + queries[:, None] * stride_qm
                        + dims[None, :], mask=real[:, None], other=0.0)
        best = tl.full([BLOCK_Q * GROUP_PAD], START, tl.float32)
        total = tl.zeros([BLOCK_Q * GROUP_PAD], tl.float32)
        acc = tl.zeros([BLOCK_Q * GROUP_PAD, DIM], tl.float32)
        k_row = k + row * stride_kb + kv * stride_kh + dims[None, :]
        v_row = v + row * stride_vb + kv * stride_vh + dims[None, :]
        lo = (tl.load(first + row) // BLOCK_N) * BLOCK_N
        mid = tl.maximum(lo, (end // BLOCK_N) * BLOCK_N)  # slots before ``mid`` precede every query: no causal test
        hi = tl.minimum(keys, end + (tile + 1) * BLOCK_Q)  # the tile's last query sees slots up to end + its index
        for start in range(lo, mid, BLOCK_N):
            slots = start + tl.arange(0, BLOCK_N)
            open_ = tl.load(live + row * stride_lb + slots) != 0
            keys_tile = tl.load(k_row + slots[:, None] * stride_kn, mask=open_[:, None], other=0.0)
            values = tl.load(v_row + slots[:, None] * stride_vn, mask=open_[:, None], other=0.0)
            best, total, acc = step(query, keys_tile, values, open_[None, :], best, total, acc, scale_log2,
                                    PRECISION)
        for start in range(mid, hi, BLOCK_N):
            slots = start + tl.arange(0, BLOCK_N)
            open_ = tl.load(live + row * stride_lb + slots, mask=slots < hi, other=0) != 0
            keys_tile = tl.load(k_row + slots[:, None] * stride_kn, mask=open_[:, None], other=0.0)
            values = tl.load(v_row + slots[:, None] * stride_vn, mask=open_[:, None], other=0.0)
            visible = open_[None, :] & (slots[None, :] <= end + queries[:, None])
            best, total, acc = step(query, keys_tile, values, visible, best, total, acc, scale_log2, PRECISION)
        result = acc / tl.where(total == 0.0, 1.0, total)[:, None]
        tl.store(out + row * stride_ob + queries[:, None] * stride_om + heads[:, None] * stride_oh + dims[None, :],
                 result.to(out.dtype.element_ty), mask=real[:, None])


def prefill_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rows: PrefillRows, scale: float,
                      tiles: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Attention of a block of queries per row: ``query`` [rows, heads, width, dim], ``key`` / ``value`` [rows, kv
    heads, slots, dim] (the slots the block may attend to: ``rows.live`` says which are live). Returns [rows,
    width, heads, dim] (transformers' layout after attention). A query that sees no live slot gets zeros."""
    n, heads, width, dim = query.shape
    kv_heads, slots = key.shape[1], key.shape[2]
    group = heads // kv_heads
    group_pad = triton.next_power_of_2(group)
    block_q, block_n, warps, stages = tiles or TILES[query.element_size()]
    block_q = max(block_q, triton.cdiv(16, group_pad))  # tl.dot needs 16 rows
    out = torch.empty(n, width, heads, dim, dtype=query.dtype, device=query.device)
    live = rows.live
    _prefill_kernel[(triton.cdiv(width, block_q), n * kv_heads)](
        query, key, value, live, rows.first, out, scale * LOG2E, rows.end, width, slots,
        query.stride(0), query.stride(1), query.stride(2), key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2), live.stride(0), out.stride(0), out.stride(1),
        out.stride(2), KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=group_pad, DIM=dim, BLOCK_Q=block_q,
        BLOCK_N=block_n,
        # float32 (a model in float32: the tests) in full precision, not TF32's 10-bit products
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32", num_warps=warps, num_stages=stages)
    return out


def fits(module, query, key, value, rows) -> bool:
    """Whether this call is one the kernel computes: the engine's prefill (``rows`` given, as many rows as the
    query, the live mask covering the keys), a head size Triton tiles, no training, on CUDA (or in Triton's
    interpreter), the switch on."""
    return (rows is not None and triton is not None and os.environ.get(SWITCH, "1") != "0"
            and not module.training and query.shape[0] == key.shape[0] == rows.live.shape[0]
            and rows.live.shape[1] >= key.shape[2] and query.shape[1] % key.shape[1] == 0
            and query.shape[-1] in (64, 128, 256) and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
            and query.dtype == key.dtype == value.dtype
            and query.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and (query.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"))


FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextmanager
def grouped_query_attention(enabled: bool):
    """Within: transformers' SDPA attention hands the key/value heads to SDPA as they are (``enable_gqa``) even
    with a mask, instead of repeating each one for its query heads (its default whenever a mask is given).
    transformers' own switch, ``TRANSFORMERS_SDPA_FORCE_GQA``; on CUDA only, where SDPA's masked kernels take
    grouped heads. Measured on an H200 (docs/LOG.md): one layer's prefill attention 10.9 -> 7.0 ms. The switch is
    the process's environment: lanes set it only in their turn on the GPU (``_GPU_TURN``), one at a time."""
    if not enabled:
        yield
        return
    before = os.environ.get(FORCE_GQA)
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORCE_GQA, None)
        else:
            os.environ[FORCE_GQA] = before
