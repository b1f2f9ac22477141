"""The cached engine's compaction on a GPU: each new row's slots gathered from the old cache in one pass, in Triton.

Why hand-written: at every step the engine rebuilds its KV cache with each conversation's live slots moved to the
left-padded front of its new row (``CachedEngine._compact``). With PyTorch's advanced indexing that is a gather
into a temporary laid out [rows, slots, heads, dim], then a strided copy into the new cache, after the new cache
was zeroed whole: three passes over the data, and on an H200 the compaction took 1.2-1.4 ms per sample of the 4B
loop (docs/LOG.md, session 16), several times what reading and writing the live slots once costs. This kernel
reads each live slot's keys and values once (one program per row, key/value head and block of slots, both
buffers of a layer in one launch) and writes them in place; only the room after the live slots is zeroed.

Off on the CPU (CI: PyTorch's indexing there, the same result) and without Triton; tested equal to the indexing
in Triton's interpreter where Triton is installed and on CUDA in the GPU tier.
"""

from __future__ import annotations

import os

import torch

BLOCK = 64  # slots per program

try:  # Triton comes with CUDA builds of torch (and the dev extra); the CPU build has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None


if triton is not None:

    @triton.jit
    def _gather_kernel(src_k, src_v, dst_k, dst_v, src_rows, src_cols, width, stride_cols,
                       stride_sr, stride_sh, stride_sc, stride_dr, stride_dh, stride_dc,
                       BLOCK: tl.constexpr, DIM: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1).to(tl.int64)
        cols = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < width
        dims = tl.arange(0, DIM)
        src_row = tl.load(src_rows + row).to(tl.int64)
        src_col = tl.load(src_cols + row * stride_cols + cols, mask=inside, other=0).to(tl.int64)
        source = src_row * stride_sr + head * stride_sh + src_col[:, None] * stride_sc + dims[None, :]
        target = row * stride_dr + head * stride_dh + cols[:, None].to(tl.int64) * stride_dc + dims[None, :]
        tl.store(dst_k + target, tl.load(src_k + source, mask=inside[:, None]), mask=inside[:, None])
        tl.store(dst_v + target, tl.load(src_v + source, mask=inside[:, None]), mask=inside[:, None])


def usable(tensor: torch.Tensor) -> bool:
    """Whether the kernel runs for buffers like ``tensor``: Triton installed, on CUDA (or anywhere in Triton's
    interpreter), a head size Triton tiles (a power of two), the last dimension contiguous."""
    return (triton is not None and (tensor.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")
            and tensor.shape[-1] in (16, 32, 64, 128, 256) and tensor.stride(-1) == 1)


def gather_slots(new: tuple[torch.Tensor, torch.Tensor], old: tuple[torch.Tensor, torch.Tensor],
                 src_rows: torch.Tensor, src_cols: torch.Tensor) -> None:
    """``new[b][r, :, j] = old[b][src_rows[r], :, src_cols[r, j]]`` for both buffers b (keys, values) of a layer,
    every row r of ``src_cols`` [rows, width] and every slot j < width; buffers [rows, heads, slots, dim]. With the
    kernel where ``usable``, else PyTorch's indexing."""
    keys, values = new
    width = src_cols.shape[1]
    if not width:
        return
    if not usable(keys):
        keys[:, :, :width] = old[0][src_rows[:, None], :, src_cols].transpose(1, 2)
        values[:, :, :width] = old[1][src_rows[:, None], :, src_cols].transpose(1, 2)
        return
    assert keys.stride() == values.stride() and old[0].stride() == old[1].stride() and src_cols.stride(1) == 1
    rows, heads, _, dim = keys.shape
    grid = (rows, heads, triton.cdiv(width, BLOCK))
    _gather_kernel[grid](old[0], old[1], keys, values, src_rows, src_cols, width, src_cols.stride(0),
                         old[0].stride(0), old[0].stride(1), old[0].stride(2),
                         keys.stride(0), keys.stride(1), keys.stride(2), BLOCK=BLOCK, DIM=dim)
