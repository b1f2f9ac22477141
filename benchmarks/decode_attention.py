"""The decode step's attention alone: transformers' SDPA path (as the engine called it before) against the Triton
decode kernel (``ivt_core.grounders.decode_attention``), at the engine's shapes, on a GPU.

One query token per row, a key/value cache [rows, kv heads, capacity, dim] with ~10 % of its slots masked (holes
and the room not yet written), bf16. For each shape: ms per call (CUDA events, median of 5 runs of 50 calls), and
the bandwidth that time means for one read of the live keys and values (the memory floor: H200 ~4.8 TB/s).

    python benchmarks/decode_attention.py [--heads 32 --kv-heads 8 --dim 128] [--out build/bench/decode_attention.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, calls: int = 50, repeats: int = 5) -> float:
    import torch

    for _ in range(3):
        fn()
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
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ivt_core.grounders.decode_attention import decode_attention, splits_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rows", default="1,16,64,128,256")
    parser.add_argument("--capacity", default="500,900,1300")
    parser.add_argument("--sweep", action="store_true",
                        help="also time the kernel's other launch settings (block, warps, stages) at each shape")
    parser.add_argument("--out", default="build/bench/decode_attention.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2

    class Layer(torch.nn.Module):  # what transformers' attention functions read from the attention module
        num_key_value_groups = args.heads // args.kv_heads
        is_causal = True

    layer = Layer().eval()
    results = []
    print(f"decode attention, {torch.cuda.get_device_name()}, heads {args.heads}, kv heads {args.kv_heads}, "
          f"dim {args.dim}, bf16")
    print(f"{'rows':>6}{'capacity':>10}{'splits':>8}{'sdpa ms':>10}{'kernel ms':>11}{'speedup':>9}"
          f"{'sdpa GB/s':>11}{'kernel GB/s':>13}")
    for rows in (int(r) for r in args.rows.split(",")):
        for capacity in (int(c) for c in args.capacity.split(",")):
            generator = torch.Generator(device="cuda").manual_seed(0)
            query = torch.randn(rows, args.heads, 1, args.dim, device="cuda", generator=generator,
                                dtype=torch.bfloat16)
            key, value = (torch.randn(rows, args.kv_heads, capacity, args.dim, device="cuda", generator=generator,
                                      dtype=torch.bfloat16) for _ in range(2))
            live = torch.rand(rows, capacity, device="cuda", generator=generator) < 0.95
            live[:, -max(1, capacity // 20):] = False
            mask = live[:, None, None, :]
            scale = args.dim ** -0.5
            sdpa_ms = _time(partial(sdpa_attention_forward, layer, query, key, value, mask, scaling=scale))
            kernel_ms = _time(partial(decode_attention, query, key, value, live, scale))
            live_bytes = int(live.sum()) * args.kv_heads * args.dim * 2 * 2  # keys and values, bf16
            row = {"rows": rows, "capacity": capacity, "splits": splits_for(rows, args.kv_heads, capacity),
                   "sdpa_ms": sdpa_ms, "kernel_ms": kernel_ms, "live_kv_bytes": live_bytes,
                   "sdpa_gb_s": live_bytes / sdpa_ms / 1e6, "kernel_gb_s": live_bytes / kernel_ms / 1e6}
            results.append(row)
            print(f"{rows:>6}{capacity:>10}{row['splits']:>8}{sdpa_ms:>10.3f}{kernel_ms:>11.3f}"
                  f"{sdpa_ms / kernel_ms:>8.2f}x{row['sdpa_gb_s']:>11.0f}{row['kernel_gb_s']:>13.0f}")
            if args.sweep:
                row["sweep"] = {}
                for block, warps, stages in itertools.product((32, 64, 128), (2, 4, 8), (2, 3, 4)):
                    try:
                        ms = _time(partial(decode_attention, query, key, value, live, scale, block, warps, stages))
                    except Exception as exc:  # noqa: BLE001 - a setting Triton cannot compile: skipped
                        print(f"      block {block} warps {warps} stages {stages}: {type(exc).__name__}")
                        continue
                    row["sweep"][f"{block},{warps},{stages}"] = ms
                best = min(row["sweep"], key=row["sweep"].get)
                print(f"      best launch (block,warps,stages) {best}: {row['sweep'][best]:.3f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "heads": args.heads, "kv_heads": args.kv_heads, "dim": args.dim,
                               "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
