"""Capturing the cached engine's decode step as a CUDA graph, without what ``torch.cuda.graph`` does around it.

``torch.cuda.graph`` empties PyTorch's caching allocators and synchronises the device on entering; the engine
captures a graph at every step (its compaction makes new buffers), so both cost it on every step (docs/LOG.md,
sessions 15 and 16). ``capturing`` is the capture itself, on one side stream (``engine._GPU_TURN``: one lane
captures at a time).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

_CAPTURE_STREAM = None  # one side stream for every capture (``engine._GPU_TURN``: one lane captures at a time)


@contextmanager
def capturing(graph):
    """``torch.cuda.graph(graph, capture_error_mode="thread_local")`` without its emptying of the caching
    allocators: on entering, ``torch.cuda.graph`` releases every cached block of device memory and every cached
    page-locked host buffer (``torch._C._host_emptyCache``, a ``cudaFreeHost`` each, which waits for the GPU). The
    engine captures a decode graph at every step, so each step's cache, activations and page-locked image buffers
    were allocated afresh from the driver (``cudaMalloc`` / ``cudaHostAlloc`` while the GPU waited: docs/LOG.md,
    session 15). Capturing on a side stream after a synchronisation is what ``torch.cuda.graph`` does otherwise;
    thread_local: another lane's thread may launch work or allocate while this one captures. Without
    ``torch.cuda.graph``'s synchronisation either: capturing records kernels without running them, so the CPU
    captures while the GPU still runs the step's prefill (the replays are queued after it on the engine's stream;
    what the capture allocates comes from the graph's own pool, never from memory the queued work uses)."""
    global _CAPTURE_STREAM
    if _CAPTURE_STREAM is None:
        _CAPTURE_STREAM = torch.cuda.Stream()
    with torch.cuda.stream(_CAPTURE_STREAM):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            yield
        finally:
            graph.capture_end()
