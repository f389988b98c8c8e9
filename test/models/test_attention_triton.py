"""The Triton kernel of local memory attention against the float64 reference, and its selection.

triton fixes its mode for the whole process when it is first imported (see
``lmanet_ros.models._attention_triton_kernel``): native, or interpreted (``TRITON_INTERPRET=1``,
CPU tensors). Where CUDA is not available this module turns the interpreter on at import, before
anything imports triton (pytest imports every test module before it runs any test; nothing else in
this repository uses triton on the CPU), and the kernel runs on CPU tensors (``cpu`` parameter).
Where CUDA is available it leaves $TRITON_INTERPRET alone, and the same checks run natively on
the GPU (``cuda`` parameter); ``TRITON_INTERPRET=1 scripts/test.sh ...`` runs the ``cpu`` ones
there.
"""
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from lmanet_ros.models import attention, attention_triton  # noqa: E402 (after the switch)
from lmanet_ros.models.attention import (attention_backend, local_memory_attention,  # noqa: E402
                                         local_memory_attention_reference)
from lmanet_ros.models.attention_triton import Blocks  # noqa: E402
from models_helpers import random_memory_inputs  # noqa: E402
from models_helpers import one_cpu_thread  # noqa: F401, E402 (autouse fixture)

TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
TRITON_AVAILABLE, TRITON_DETAIL = attention_triton.load()
INTERPRETED = attention_triton.interpreting()
needs_triton = pytest.mark.skipif(not TRITON_AVAILABLE, reason=TRITON_DETAIL)
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="triton's interpreter is off (TRITON_INTERPRET=1 runs these on CPU)")
needs_native_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or INTERPRETED,
    reason="needs CUDA, and triton's interpreter off")
DEVICES = [pytest.param("cpu", marks=[needs_triton, needs_interpreter]),
           pytest.param("cuda", marks=[needs_triton, needs_native_cuda])]

#: Largest max abs error against the float64 reference of float32 inputs.
FP32_ATOL = 5e-5
#: The same for half-precision inputs (outputs of order 1: a few units in the last place).
HALF_ATOL = {torch.float16: 4e-3, torch.bfloat16: 2e-2}


@pytest.fixture(autouse=True)
def default_backend(monkeypatch):
    """Every test starts from the default selection (no $LMANET_ATTENTION)."""
    monkeypatch.delenv(attention.BACKEND_ENV, raising=False)


@pytest.fixture(params=DEVICES)
def device(request):
    """``cpu`` (the kernel in triton's interpreter) or ``cuda`` (native)."""
    return torch.device(request.param)


def inputs_on(device, batch, key_channels, value_channels, height, width, frames, *,
              dtype=torch.float32, seed=0, key_scale=0.6):
    """(query (B, Ck, H, W), T keys (B, Ck, H, W), T values (B, Cv, H, W)): random, rounded to
    ``dtype``, on ``device``."""
    query, keys, values = random_memory_inputs(batch, key_channels, value_channels, height,
                                               width, frames, seed=seed, key_scale=key_scale)

    def move(tensor):
        return tensor.to(device=device, dtype=dtype)

    return move(query), [move(k) for k in keys], [move(v) for v in values]


def max_error(got, expected):
    return (got.double().cpu() - expected).abs().max().item()


def errors_of_both(device, shape, radius, *, dtype=torch.float32, key_scale=0.6, blocks=None):
    """Max abs errors (triton, torch backend) against the float64 reference on the same inputs
    (rounded to ``dtype``); both outputs must be finite (no ``exp(-inf - -inf)``)."""
    query, keys, values = inputs_on(torch.device("cpu"), *shape, dtype=dtype,
                                    seed=shape[3] * shape[4], key_scale=key_scale)
    expected = local_memory_attention_reference(
        query.double(), [k.double() for k in keys], [v.double() for v in values], radius=radius)
    query, keys, values = query.to(device), [k.to(device) for k in keys], [
        v.to(device) for v in values]
    with torch.inference_mode():
        got = attention_triton.local_memory_attention_triton(query, keys, values, radius,
                                                             blocks=blocks)
        plain = local_memory_attention(query, keys, values, radius=radius, backend="torch")
    assert got.shape == plain.shape and got.dtype == dtype and got.device == device
    assert torch.isfinite(got).all()
    return max_error(got, expected), max_error(plain, expected)


ACCURACY_CASES = [  # (B, Ck, Cv, H, W, T), radius
    pytest.param((1, 16, 64, 13, 29, 2), 10, id="13x29-T2-r10"),    # odd, smaller than windows
    pytest.param((1, 16, 64, 37, 61, 3), 2, id="37x61-T3-r2"),      # odd, small radius
    pytest.param((2, 5, 13, 9, 11, 1), 1, id="B2-9x11-T1-r1"),      # odd channels, T = 1
    pytest.param((1, 16, 64, 3, 2, 2), 10, id="3x2-T2-r10"),        # map smaller than a tile
    pytest.param((1, 16, 8, 12, 20, 2), 0, id="12x20-T2-r0"),       # the pixel itself only
    pytest.param((1, 16, 64, 64, 128, 4), 10, id="64x128-T4-r10"),  # ERFNet at 512x1024
]


@pytest.mark.parametrize("shape, radius", ACCURACY_CASES)
def test_fp32_error_within_twice_torch(device, shape, radius):
    ours, plain = errors_of_both(device, shape, radius)
    print(f"{shape} r={radius} {device.type}: triton {ours:.2e}, torch {plain:.2e}")
    assert ours <= 2 * plain and ours <= FP32_ATOL


def test_large_logits_are_stable(device):
    """Logits in the hundreds: the zero-padded positions' weights vanish, nothing overflows."""
    ours, plain = errors_of_both(device, (1, 16, 8, 12, 16, 2), 10, key_scale=4.0)
    assert ours <= 2 * plain and ours <= FP32_ATOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_torch(device, dtype):
    """fp16/bf16 inputs (fp32 logits, softmax and accumulation; the probabilities and the output
    rounded to the inputs' dtype) against float64 on the same rounded inputs."""
    ours, plain = errors_of_both(device, (1, 16, 64, 16, 24, 3), 10, dtype=dtype)
    print(f"{dtype} {device.type}: triton {ours:.2e}, torch {plain:.2e}")
    assert ours <= 2 * plain and ours <= HALF_ATOL[dtype]


@pytest.mark.parametrize("blocks, shape, radius", [
    # The GPU's blocks: 13 steps of 64 positions per frame; the first steps hold no position of
    # the tile's lower pixels' windows (their running maximum is still -inf there).
    (Blocks(8, 8, 64, 64), (1, 16, 64, 19, 21, 2), 10),
    # Three value-channel blocks (the last one partial), key channels padded 5 -> 16.
    (Blocks(4, 16, 32, 16), (2, 5, 40, 9, 23, 2), 3),
])
def test_other_block_sizes(device, blocks, shape, radius):
    ours, plain = errors_of_both(device, shape, radius, blocks=blocks)
    assert ours <= 2 * plain and ours <= FP32_ATOL


def test_non_contiguous_inputs(device):
    query, keys, values = inputs_on(device, 1, 16, 8, 10, 14, 2, seed=4)
    layouts = [t.contiguous(memory_format=torch.channels_last) for t in (query, *keys, *values)]
    with torch.inference_mode():
        got = local_memory_attention(layouts[0], layouts[1:3], layouts[3:], backend="triton")
        expected = local_memory_attention(query, keys, values, backend="triton")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def calls_of(monkeypatch):
    """Record which implementation runs: appends "triton" or "torch" per call."""
    calls = []
    triton_fn, tiled = attention_triton.local_memory_attention_triton, attention._tiled_attention
    monkeypatch.setattr(attention_triton, "local_memory_attention_triton",
                        lambda *args, **kw: calls.append("triton") or triton_fn(*args, **kw))
    monkeypatch.setattr(attention, "_tiled_attention",
                        lambda *args: calls.append("torch") or tiled(*args))
    return calls


@needs_native_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_auto_takes_triton_on_cuda(dtype, monkeypatch):
    calls = calls_of(monkeypatch)
    query, keys, values = inputs_on(torch.device("cuda"), 1, 16, 8, 9, 12, 2, dtype=dtype)
    with torch.inference_mode():
        out = local_memory_attention(query, keys, values)
    assert calls == ["triton"] and out.dtype == dtype and out.is_cuda
    assert attention_backend("cuda", dtype) == f"triton ({TRITON_DETAIL})"


@pytest.mark.skipif(not TRITON_INSTALLED, reason="triton is not installed")
def test_triton_loads_where_installed():
    """An installed triton must load (else every kernel test above would only skip)."""
    assert TRITON_AVAILABLE, TRITON_DETAIL


@needs_triton
@needs_interpreter
def test_auto_sends_nothing_to_the_interpreter(monkeypatch):
    calls = calls_of(monkeypatch)
    query, keys, values = inputs_on(torch.device("cpu"), 1, 16, 8, 9, 12, 2, dtype=torch.float16)
    local_memory_attention(query, keys, values)
    assert calls == ["torch"]
    assert attention_backend("cuda") == (
        "torch (triton kernel does not apply: triton's interpreter is on (TRITON_INTERPRET=1))")


@needs_triton
@needs_interpreter
def test_environment_selects_triton(monkeypatch):
    monkeypatch.setenv(attention.BACKEND_ENV, "triton")
    calls = calls_of(monkeypatch)
    query, keys, values = inputs_on(torch.device("cpu"), 1, 16, 8, 6, 7, 1)
    with torch.inference_mode():
        local_memory_attention(query, keys, values, radius=2)
    assert calls == ["triton"]
    assert attention_backend() == f"triton ({TRITON_DETAIL})"


@needs_triton
@needs_interpreter
@pytest.mark.parametrize("case, match", [
    ("float64", "float64"),
    ("grad", "autograd"),
    ("wide keys", "257 key channels"),
    ("mixed dtypes", "differ in device or dtype"),
])
def test_explicit_triton_rejects_what_it_cannot_take(case, match):
    key_channels = 257 if case == "wide keys" else 4
    query, keys, values = inputs_on(torch.device("cpu"), 1, key_channels, 3, 5, 5, 2)
    if case == "float64":
        query, keys, values = query.double(), [k.double() for k in keys], [v.double()
                                                                           for v in values]
    elif case == "grad":
        query.requires_grad_()
    elif case == "mixed dtypes":
        values = [v.half() for v in values]
    with pytest.raises(ValueError, match=match):
        local_memory_attention(query, keys, values, backend="triton")


def run_python(code: str, interpret: str | None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with $TRITON_INTERPRET set to ``interpret`` (None:
    unset), as this process does on a CPU-only machine; fails the test on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@needs_triton
def test_mode_is_fixed_when_triton_is_imported():
    """Natively loaded triton: CPU inputs are refused with the reason; turning the interpreter on
    after triton was imported makes the kernel unavailable, with the reason, and calls fall
    back to the PyTorch path."""
    result = run_python("""
        import os
        import pytest
        import torch
        from lmanet_ros.models import attention
        query = torch.randn(1, 4, 5, 5)
        keys, values = [torch.randn(1, 4, 5, 5)], [torch.randn(1, 3, 5, 5)]
        with pytest.raises(ValueError, match="need triton's interpreter .TRITON_INTERPRET=1."):
            attention.local_memory_attention(query, keys, values, backend="triton")
        print(attention.attention_backend("cuda"))
    """, None)
    assert result.stdout.strip() == f"triton ({TRITON_DETAIL})"
    result = run_python("""
        import os
        import triton.language
        os.environ["TRITON_INTERPRET"] = "1"
        import torch
        from lmanet_ros.models import attention
        print(attention.attention_backend("cuda"))
    """, None)
    assert result.stdout.strip().startswith(
        "torch (triton kernel unavailable: triton does not import (ImportError: "
        "TRITON_INTERPRET changed after triton was imported")


@needs_triton
def test_kernel_compiles_for_a_gpu_without_one():
    """The native kernel, as launched on the GPU (default blocks, ERFNet's 16 key channels and
    64 value channels), compiles to sm_90 code for each dtype: triton's compiler and ptxas run
    without a GPU; fp32 takes exact FMA products, fp16/bf16 tensor-core MMA."""
    result = run_python("""
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        import torch
        from lmanet_ros.models import attention_triton as at
        from lmanet_ros.models import _attention_triton_kernel as kernel

        fn = kernel.fused_local_memory_attention
        blocks = at.default_blocks(64, 128, 64, 10, interpreted=False)
        for dtype, pointer in [(torch.float32, "*fp32"), (torch.float16, "*fp16"),
                               (torch.bfloat16, "*bf16")]:
            constants = at.kernel_constants(10, 16, dtype, blocks)
            signature = {name: "constexpr" if name in constants
                         else pointer if name.endswith("_ptr") else "i32"
                         for name in fn.arg_names}
            compiled = triton.compile(ASTSource(fn, signature, constants),
                                      target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": blocks.num_warps})
            print(dtype, "mma" if "mma" in compiled.asm["ptx"] else "fma",
                  len(compiled.asm["cubin"]) > 0)
    """, None)
    assert result.stdout.split("\n")[:3] == [
        "torch.float32 fma True", "torch.float16 mma True", "torch.bfloat16 mma True"]


def test_missing_triton_is_reported(monkeypatch, caplog):
    monkeypatch.setattr(attention_triton, "load", lambda: (False, "not installed (test)"))
    attention._triton_kernel.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=attention.__name__):
            assert attention_backend("cuda") == (
                "torch (triton kernel unavailable: not installed (test))")
            assert attention_backend("cuda", torch.float16).startswith("torch (triton kernel")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "not installed (test)" in warnings[0].getMessage()
        query, keys, values = inputs_on(torch.device("cpu"), 1, 4, 3, 5, 5, 2)
        with pytest.raises(RuntimeError, match="not installed"):
            local_memory_attention(query, keys, values, backend="triton")
        monkeypatch.setenv(attention.BACKEND_ENV, "triton")
        assert attention_backend("cuda") == "unavailable (not installed (test))"
    finally:
        attention._triton_kernel.cache_clear()


@pytest.mark.parametrize("env, device, dtype, expected", [
    (None, "cuda", torch.float64,
     "torch (triton kernel does not apply: dtype torch.float64 (the kernel takes float32, "
     "float16 or bfloat16))"),
    (None, "cpu", torch.float16,
     "torch (compiled kernel does not apply: dtype torch.float16 (the kernel takes float32))"),
    ("torch", "cuda", torch.float16, "torch (LMANET_ATTENTION=torch)"),
    ("compiled", "cuda", torch.float32, "unavailable (inputs are not on the CPU)"),
    ("triton", "mps", torch.float32, "unavailable (inputs are on mps, not on a CUDA device)"),
])
def test_attention_backend_says_why_no_kernel_runs(env, device, dtype, expected, monkeypatch):
    if env is not None:
        monkeypatch.setenv(attention.BACKEND_ENV, env)
    assert attention_backend(device, dtype) == expected
