"""The prefill's attention alone, per SDPA backend, at the engine's shapes: the first call of a new shape and the
calls after it, on a GPU.

The engine's prefill attends a block of new tokens per row ([rows, heads, width, dim]) to the row's whole cache
([rows, kv heads, capacity, dim]) under a boolean mask (the cache's live slots, causal within the block), grouped
heads handed over as they are (``enable_gqa``, as the engine runs transformers' SDPA). cuDNN's kernel needs an
execution plan per shape, built on the CPU at the shape's first call (and per thread: PyTorch keeps those plans
thread-local); profiles showed the GPU idle while it was built (docs/LOG.md, session 15). For each backend: the
first call's wall time (plan included), then ms per call (CUDA events, median of 5 runs of 10 calls). Backends that
refuse the inputs are reported as such. Then the vision tower's attention (equal images, no mask), where FlashAttention
is a candidate too.

    python benchmarks/prefill_attention.py [--rows 40 --width 400 --capacity 500,900,1300] [--out ...json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _call(backend, query, key, value, mask, repeat_kv: bool):
    import torch
    from torch.nn.attention import sdpa_kernel

    if repeat_kv:
        group = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    grouped = key.shape[1] != query.shape[1]
    with sdpa_kernel([backend]):
        return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=grouped)


def _time(fn, calls: int = 10, repeats: int = 5) -> float:
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch.nn.attention import SDPBackend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--capacity", default="500,900,1300")
    parser.add_argument("--vision-images", default="37,40")
    parser.add_argument("--vision-patches", type=int, default=1200)
    parser.add_argument("--vision-heads", type=int, default=16)
    parser.add_argument("--vision-dim", type=int, default=64)
    parser.add_argument("--out", default="build/bench/prefill_attention.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    backends = [("cudnn", SDPBackend.CUDNN_ATTENTION, False), ("efficient", SDPBackend.EFFICIENT_ATTENTION, False),
                ("efficient, heads repeated", SDPBackend.EFFICIENT_ATTENTION, True)]
    results = []
    print(f"{'backend':<28}{'rows':>6}{'width':>7}{'capacity':>10}{'first call ms':>15}{'ms per call':>13}")
    for capacity in (int(c) for c in args.capacity.split(",")):
        generator = torch.Generator(device="cuda").manual_seed(0)
        query = torch.randn(args.rows, args.heads, args.width, args.dim, device="cuda", generator=generator,
                            dtype=torch.bfloat16)
        key, value = (torch.randn(args.rows, args.kv_heads, capacity, args.dim, device="cuda", generator=generator,
                                  dtype=torch.bfloat16) for _ in range(2))
        live = torch.rand(args.rows, capacity, device="cuda", generator=generator) < 0.9
        start = capacity - args.width
        live[:, start:] = True
        slots = torch.arange(capacity, device="cuda")
        causal = slots[None, :] <= (start + torch.arange(args.width, device="cuda"))[:, None]
        mask = (live[:, None, None, :] & causal[None, None]).contiguous()
        for name, backend, repeat in backends:
            row = {"backend": name, "rows": args.rows, "width": args.width, "capacity": capacity}
            try:
                torch.cuda.synchronize()
                began = time.perf_counter()
                _call(backend, query, key, value, mask, repeat)
                torch.cuda.synchronize()
                row["first_call_ms"] = 1000 * (time.perf_counter() - began)
                inputs = (backend, query, key, value, mask, repeat)
                row["ms_per_call"] = _time(lambda inputs=inputs: _call(*inputs))
                print(f"{name:<28}{args.rows:>6}{args.width:>7}{capacity:>10}{row['first_call_ms']:>15.1f}"
                      f"{row['ms_per_call']:>13.3f}")
            except RuntimeError as exc:
                row["error"] = str(exc).splitlines()[0][:200]
                print(f"{name:<28}{args.rows:>6}{args.width:>7}{capacity:>10}   refused: {row['error'][:60]}")
            results.append(row)
    # the vision tower's attention: each image's patches among themselves, no mask (fast_vision's batched call)
    print(f"\n{'vision backend':<28}{'images':>7}{'patches':>9}{'first call ms':>15}{'ms per call':>13}")
    for images in (int(n) for n in args.vision_images.split(",")):
        generator = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (torch.randn(images, args.vision_heads, args.vision_patches, args.vision_dim, device="cuda",
                               generator=generator, dtype=torch.bfloat16) for _ in range(3))
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                              ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            row = {"backend": name, "vision_images": images, "patches": args.vision_patches}
            inputs = (backend, q, k, v, None, False)
            try:
                torch.cuda.synchronize()
                began = time.perf_counter()
                _call(*inputs)
                torch.cuda.synchronize()
                row["first_call_ms"] = 1000 * (time.perf_counter() - began)
                row["ms_per_call"] = _time(lambda inputs=inputs: _call(*inputs))
                print(f"{name:<28}{images:>7}{args.vision_patches:>9}{row['first_call_ms']:>15.1f}"
                      f"{row['ms_per_call']:>13.3f}")
            except RuntimeError as exc:
                row["error"] = str(exc).splitlines()[0][:200]
                print(f"{name:<28}{images:>7}{args.vision_patches:>9}   refused: {row['error'][:60]}")
            results.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
