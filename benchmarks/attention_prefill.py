"""One layer's prefill attention as the cached engine runs it, three ways, on one GPU.

    python benchmarks/attention_prefill.py [--rows 128 --history 1200 --new 600 --heads 32 --kv-heads 8]

The engine's prefill block: ``rows`` conversations, each with a history in the KV cache (left-padded to the
longest, lengths spread between half and all of ``--history``) and ``--new`` tokens to encode (lengths spread
too), right-padded into one block. Timed:

- ``sdpa-mask``: SDPA with the engine's dense 4-D boolean mask, KV heads repeated (transformers' path today);
- ``sdpa-mask-gqa``: the same mask, ``enable_gqa=True`` (no repeated heads);
- ``varlen``: the live keys and queries packed (``cu_seqlens``) for ``torch.nn.attention.varlen.varlen_attn``
  (flash attention, causal aligned to each sequence's end), the packing copies included;
- ``efficient``: SDPA's memory-efficient kernel with the same mask, KV heads repeated (it takes no grouped heads);
- ``ivt-kernel``: the engine's own prefill kernel (``ivt_core.grounders.prefill_attention``: the live mask and the
  block's start instead of the dense mask, a key/value head's query heads in one tile). ``--sweep`` also times its
  launch settings (query positions per tile, slots per step, warps, stages) and prints the fastest.

The queries are in transformers' layout after its projection ([rows, block, heads, dim] seen as [rows, heads, block,
dim]), as the engine hands them over.

The first call of each mode is timed apart (wall time): for cuDNN's kernel (what SDPA picks for the masked modes on
Hopper) it includes building the execution plan for the shape, on the CPU, per shape and per thread (PyTorch keeps
those plans thread-local); the engine's profiles showed the GPU idle meanwhile (docs/LOG.md, session 15). Run the
script once per process for a cold first call (``--capacity`` changes the shape). ``--vision N`` times the vision
tower's attention too (N equal images of ``--patches`` patches, no mask) on cuDNN, flash and the efficient kernel.

Outputs are compared on the real tokens. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--history", type=int, default=1200)
    parser.add_argument("--new", type=int, default=600)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--vision", type=int, default=0, help="images for the vision attention's table (0: none)")
    parser.add_argument("--patches", type=int, default=1200)
    parser.add_argument("--vision-heads", type=int, default=16)
    parser.add_argument("--vision-dim", type=int, default=64)
    parser.add_argument("--sweep", action="store_true", help="time the prefill kernel's launch settings too")
    parser.add_argument("--out", default="build/bench/attention_prefill.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("attention_prefill.py: needs a CUDA GPU")
    device, dtype = "cuda", torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    history = torch.randint(args.history // 2, args.history + 1, (args.rows,), generator=generator)
    new = torch.randint(args.new // 2, args.new + 1, (args.rows,), generator=generator)
    width, block = int(history.max()), int(new.max())
    capacity = width + block
    live = torch.zeros(args.rows, capacity, dtype=torch.bool)
    for row in range(args.rows):
        live[row, width - history[row]:width] = True
        live[row, width:width + new[row]] = True
    live = live.to(device)
    slots = torch.arange(capacity, device=device)
    causal = slots[None, :] <= (width + torch.arange(block, device=device))[:, None]
    mask = (live[:, None, None, :] & causal[None, None]).contiguous()
    query = torch.randn(args.rows, block, args.heads, args.dim, device=device, dtype=dtype).transpose(1, 2)
    keys = torch.randn(args.rows, args.kv_heads, capacity, args.dim, device=device, dtype=dtype)
    values = torch.randn_like(keys)
    real = torch.arange(block, device=device)[None, :] < new.to(device)[:, None]  # [rows, block]
    groups = args.heads // args.kv_heads

    def sdpa_repeat():
        k = keys.repeat_interleave(groups, dim=1)
        v = values.repeat_interleave(groups, dim=1)
        return torch.nn.functional.scaled_dot_product_attention(query, k, v, attn_mask=mask)

    def sdpa_gqa():
        return torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, enable_gqa=True)

    def efficient():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            return sdpa_repeat()

    key_index = live.flatten().nonzero()[:, 0]  # packed keys: each row's live slots, in order
    query_index = real.flatten().nonzero()[:, 0]
    cu_k = torch.nn.functional.pad(live.sum(1).cumsum(0), (1, 0)).int()
    cu_q = torch.nn.functional.pad(new.to(device).cumsum(0), (1, 0)).int()

    def varlen():
        from torch.nn.attention.varlen import varlen_attn

        q = query.transpose(1, 2).reshape(-1, args.heads, args.dim)[query_index]
        k = keys.transpose(1, 2).reshape(-1, args.kv_heads, args.dim)[key_index]
        v = values.transpose(1, 2).reshape(-1, args.kv_heads, args.dim)[key_index]
        packed = varlen_attn(q, k, v, cu_q, cu_k, block, capacity, window_size=(-1, 0), enable_gqa=True)
        out = torch.zeros(args.rows * block, args.heads, args.dim, device=device, dtype=dtype)
        out[query_index] = packed
        return out.view(args.rows, block, args.heads, args.dim).transpose(1, 2)

    from ivt_core.grounders.prefill_attention import PrefillRows, prefill_attention

    prefill_rows = PrefillRows.of(live, width)

    def kernel(tiles=None):
        return prefill_attention(query, keys, values, prefill_rows, args.dim ** -0.5, tiles).transpose(1, 2)

    rows, reference = [], None
    modes = (("sdpa-mask", sdpa_repeat), ("sdpa-mask-gqa", sdpa_gqa), ("varlen", varlen), ("efficient", efficient),
             ("ivt-kernel", kernel))
    for name, fn in modes:
        try:
            first_ms = _wall_ms(fn)
            out = fn()
            ms = _per_call_ms(fn, args.repeat)
        except Exception as exc:  # noqa: BLE001 - a way this torch cannot run: reported as such
            rows.append({"mode": name, "ms": None, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        got = out.transpose(1, 2)[real].float()
        reference = got if reference is None else reference
        rows.append({"mode": name, "ms": ms, "first_call_ms": first_ms,
                     "max_abs_diff": float((got - reference).abs().max())})
    real_tokens = int(new.sum())
    flops = sum(4 * args.heads * args.dim * int(n) * (int(h) + int(n) / 2) for h, n in zip(history, new, strict=True))
    print(f"prefill attention, one layer: {args.rows} rows, history <= {args.history}, new <= {args.new}, "
          f"{args.heads}/{args.kv_heads} heads, torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"{'mode':<16}{'ms':>9}{'TFLOP/s':>10}{'max |diff|':>12}{'first call ms':>15}")
    for r in rows:
        if r["ms"] is None:
            print(f"{r['mode']:<16}{'-':>9}  {r['error']}")
        else:
            print(f"{r['mode']:<16}{r['ms']:>9.2f}{flops / r['ms'] / 1e9:>10.0f}{r['max_abs_diff']:>12.4f}"
                  f"{r['first_call_ms']:>15.1f}")
    sweep = _sweep(kernel, args.repeat) if args.sweep else {}
    vision = _vision(args) if args.vision else []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "real_tokens": real_tokens, "useful_flops": flops, "rows": rows,
                               "sweep": sweep, "vision": vision, "torch": torch.__version__,
                               "device": torch.cuda.get_device_name()},
                              indent=1))
    print(f"wrote {out}")


def _wall_ms(fn) -> float:
    """Wall time of one call, the GPU synchronised before and after (a first call: plans and compiling included)."""
    import time

    import torch

    torch.cuda.synchronize()
    began = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - began)


def _per_call_ms(fn, repeat: int) -> float:
    """GPU time per call over ``repeat`` calls (CUDA events)."""
    import torch

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def _sweep(kernel, repeat: int) -> dict[str, float]:
    """The prefill kernel's time per call for each launch setting (query positions per tile, slots per step, warps,
    stages) that compiles; prints the fastest five."""
    import itertools

    times = {}
    for tiles in itertools.product((8, 16, 32), (32, 64, 128), (4, 8), (2, 3, 4)):
        try:
            kernel(tiles)
            times[",".join(map(str, tiles))] = _per_call_ms(lambda tiles=tiles: kernel(tiles), repeat)
        except Exception as exc:  # noqa: BLE001 - a setting this GPU cannot run (shared memory): skipped
            print(f"  {tiles}: {type(exc).__name__}")
    print("\nprefill kernel launch settings (block_q,block_n,warps,stages), fastest first:")
    for name in sorted(times, key=times.get)[:5]:
        print(f"  {name:<16}{times[name]:>9.3f} ms")
    return times


def _vision(args) -> list[dict]:
    """The vision tower's attention (``fast_vision``'s batched call: equal images, no mask) per SDPA backend."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(args.vision, args.vision_heads, args.patches, args.vision_dim, device="cuda",
                           dtype=torch.bfloat16) for _ in range(3))
    rows = []
    print(f"\nvision attention: {args.vision} images x {args.patches} patches, {args.vision_heads} heads of "
          f"{args.vision_dim}")
    print(f"{'backend':<16}{'ms':>9}{'first call ms':>15}")
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        def call(backend=backend):
            with sdpa_kernel([backend]):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        try:
            first = _wall_ms(call)
            ms = _per_call_ms(call, args.repeat)
        except RuntimeError as exc:
            rows.append({"backend": name, "ms": None, "error": str(exc).splitlines()[0][:200]})
            print(f"{name:<16}{'-':>9}  {rows[-1]['error']}")
            continue
        rows.append({"backend": name, "ms": ms, "first_call_ms": first})
        print(f"{name:<16}{ms:>9.3f}{first:>15.1f}")
    return rows


if __name__ == "__main__":
    main()
