"""The engine's Triton kernels compile for the GPU they run on (Hopper, sm_90), on a machine without one.

The kernels (``prefill_attention``, ``decode_attention``, ``cache_gather``) are on by default on every CUDA GPU, and
the CPU tiers never ran them: an error Triton only raises when it compiles (a global it cannot read, a type, a tile
that needs more shared memory than an SM has) surfaced only on the device machine (docs/LOG.md, session 18: a
whole device call lost to one). Triton compiles to PTX and runs its bundled ``ptxas`` without a GPU, so each
kernel is compiled here the way its wrapper launches it: the wrapper is called on CPU tensors with the launch
caught, and the caught arguments become the compile's signature and constants. Numerics stay with the GPU tier
(Triton 3.6's interpreter does not run on NumPy 2.4, this project's NumPy).

Triton comes with CUDA builds of torch; CPU machines get it with the ``dev`` extra on Linux x86-64 (the version
the device machine's torch uses). Skipped where it is not installed.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)
SHARED_MEMORY = 232_448  # bytes of shared memory one block may use on an H100 / H200
POINTER_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.uint8: "u8",
                 torch.int32: "i32", torch.int64: "i64"}


def _caught_launches(monkeypatch, kernel, call) -> list[tuple[tuple, dict]]:
    """Run ``call`` with ``kernel``'s launches caught instead of run; the launches' arguments."""
    caught = []
    monkeypatch.setattr(kernel, "run", lambda *args, grid, warmup, **kwargs: caught.append((args, kwargs)),
                        raising=False)
    call()
    assert caught, "the wrapper did not launch the kernel"
    return caught


def _compile(kernel, args: tuple, kwargs: dict):
    """Compile one caught launch of ``kernel`` for sm_90; the compiled kernel."""
    options = {name: kwargs.pop(name) for name in ("num_warps", "num_stages") if name in kwargs}
    values = dict(zip((p.name for p in kernel.params), args, strict=False)) | kwargs
    signature, constants, attrs = {}, {}, {}
    for index, param in enumerate(kernel.params):
        value = values[param.name]
        # as Triton's launcher specializes: an integer 1 becomes a constant, and a pointer or an integer divisible
        # by 16 is marked so (what lets the compiler vectorise loads and pipeline them through shared memory)
        if param.is_constexpr or (type(value) is int and value == 1):
            signature[param.name] = "constexpr"
            constants[(index,)] = value
            continue
        if isinstance(value, torch.Tensor):
            signature[param.name] = "*" + POINTER_TYPES[value.dtype]
            divisible = value.data_ptr() % 16 == 0
        elif isinstance(value, float):
            signature[param.name], divisible = "fp32", False
        else:
            signature[param.name] = "i32" if -(2 ** 31) <= value < 2 ** 31 else "i64"
            divisible = value % 16 == 0
        if divisible:
            attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(source, target=HOPPER, options=options)


def _check(monkeypatch, kernel, call) -> None:
    for args, kwargs in _caught_launches(monkeypatch, kernel, call):
        compiled = _compile(kernel, args, dict(kwargs))
        assert compiled.asm.get("cubin"), f"{kernel.fn.__name__}: no binary"
        assert compiled.metadata.shared <= SHARED_MEMORY, \
            f"{kernel.fn.__name__}: {compiled.metadata.shared} bytes of shared memory, more than an SM has"


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("heads,kv_heads", [(32, 8), (6, 2), (4, 4)])
def test_the_prefill_kernel_compiles_for_hopper_with_its_default_tiles(monkeypatch, dtype, heads, kv_heads):
    from ivt_core.grounders import prefill_attention as pa

    dtype = getattr(torch, dtype)
    query = torch.zeros(2, 40, heads, 128, dtype=dtype).transpose(1, 2)  # transformers' layout
    key = value = torch.zeros(2, kv_heads, 100, 128, dtype=dtype)
    rows = pa.PrefillRows.of(torch.ones(2, 100, dtype=torch.bool), 60)
    _check(monkeypatch, pa._prefill_kernel, lambda: pa.prefill_attention(query, key, value, rows, 0.08))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("rows", [2, 64])  # 2 rows: the cache read in parts, then merged; 64: in one part
def test_the_decode_kernels_compile_for_hopper(monkeypatch, dtype, rows):
    from ivt_core.grounders import decode_attention as da

    dtype = getattr(torch, dtype)
    query = torch.zeros(rows, 32, 1, 128, dtype=dtype)
    key = value = torch.zeros(rows, 8, 900, 128, dtype=dtype)
    live = torch.ones(rows, 900, dtype=torch.bool)
    assert (da.splits_for(rows, 8, 900) > 1) == (rows == 2)
    merged = []
    monkeypatch.setattr(da._merge_kernel, "run", lambda *a, grid, warmup, **k: merged.append((a, k)), raising=False)
    _check(monkeypatch, da._decode_kernel, lambda: da.decode_attention(query, key, value, live, 0.08))
    assert bool(merged) == (rows == 2)
    for args, kwargs in merged:
        assert _compile(da._merge_kernel, args, dict(kwargs)).asm.get("cubin")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_compaction_kernel_compiles_for_hopper(monkeypatch, dtype):
    from ivt_core.grounders import cache_gather

    dtype = getattr(torch, dtype)
    old = (torch.zeros(3, 8, 200, 128, dtype=dtype), torch.zeros(3, 8, 200, 128, dtype=dtype))
    new = (torch.zeros(2, 8, 150, 128, dtype=dtype), torch.zeros(2, 8, 150, 128, dtype=dtype))
    monkeypatch.setattr(cache_gather, "usable", lambda tensor: True)  # the GPU's path, on CPU tensors
    src_rows = torch.tensor([2, 0], dtype=torch.int64)
    src_cols = torch.arange(120, dtype=torch.int64).repeat(2, 1)
    _check(monkeypatch, cache_gather._gather_kernel, lambda: cache_gather.gather_slots(new, old, src_rows, src_cols))
