"""The step both attention kernels (``prefill_attention``, ``decode_attention``) take over each tile of cache slots:
flash attention's online softmax, in Triton, and the one optional import of Triton they share.

Scores are in base 2 (the caller passes the softmax scale times log2(e)), so the exponentials are ``exp2`` (one
instruction on NVIDIA GPUs). ``best`` starts at ``START`` (finite), not minus infinity: a tile where a query sees
no slot then leaves ``best`` finite, its weights exp2(-inf) = 0 and the running sums as they were, with no test for
an all-masked row on every step. A query that never sees a slot ends with ``total`` 0 (the kernels then write 0).
"""

from __future__ import annotations

LOG2E = 1.4426950408889634

try:  # Triton comes with CUDA builds of torch (and the dev extra); the CPU build has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = tl = None
step = None  # the Triton function below where Triton is installed
# the running maximum before any slot: below any score, finite (see above); a kernel reads globals as constexpr only
START = -1.0e30 if tl is None else tl.constexpr(-1.0e30)


if triton is not None:

    @triton.jit
    def step(query, keys, values, visible, best, total, acc, scale_log2, PRECISION: tl.constexpr):
        """One tile: ``query`` [M, dim] against ``keys`` / ``values`` [N, dim] where ``visible`` [M, N] (or [1, N]);
        returns the updated running maximum (base 2), sum of weights and weighted sum of values."""
        scores = tl.dot(query, tl.trans(keys), input_precision=PRECISION) * scale_log2
        scores = tl.where(visible, scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, 1))
        weights = tl.exp2(scores - new_best[:, None])
        shrink = tl.exp2(best - new_best)
        total = total * shrink + tl.sum(weights, 1)
        acc = acc * shrink[:, None] + tl.dot(weights.to(values.dtype), values, input_precision=PRECISION)
        return new_best, total, acc
