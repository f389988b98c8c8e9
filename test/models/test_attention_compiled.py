"""The compiled CPU kernel of local memory attention: equal to the PyTorch path, and selected
only where it applies (float32, CPU, no autograd), with the switches and fallbacks it documents.
"""
import logging

import pytest
import torch

from lmanet_ros.models import attention, build_model, load_checkpoint
from lmanet_ros.models import _attention_ext
from lmanet_ros.models.attention import (attention_backend, local_memory_attention,
                                         local_memory_attention_reference)
from models_helpers import load_golden, random_memory_inputs
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

KERNEL_AVAILABLE, KERNEL_DETAIL = _attention_ext.load()
needs_kernel = pytest.mark.skipif(
    not KERNEL_AVAILABLE, reason=f"compiled attention kernel unavailable: {KERNEL_DETAIL}")

#: fp32 agreement of the two backends (max abs), as the brief of the kernel asks.
ATOL = 1e-5


@pytest.fixture(autouse=True)
def default_backend(monkeypatch):
    """Every test starts from the default selection (no $LMANET_ATTENTION)."""
    monkeypatch.delenv(attention.BACKEND_ENV, raising=False)


def fp32_inputs(batch, key_channels, value_channels, height, width, frames, seed=0,
                key_scale=0.6):
    query, keys, values = random_memory_inputs(batch, key_channels, value_channels, height,
                                               width, frames, dtype=torch.float32, seed=seed,
                                               key_scale=key_scale)
    return query, keys, values


def both_backends(query, keys, values, **kwargs):
    with torch.inference_mode():
        compiled = local_memory_attention(query, keys, values, backend="compiled", **kwargs)
        plain = local_memory_attention(query, keys, values, backend="torch", **kwargs)
    return compiled, plain


@needs_kernel
@pytest.mark.parametrize("batch, key_channels, value_channels, height, width, frames, radius", [
    (1, 16, 64, 5, 7, 1, 10),      # map smaller than the window: every window crosses borders
    (2, 16, 64, 5, 7, 2, 10),
    (1, 16, 64, 5, 7, 4, 10),
    (1, 16, 64, 24, 40, 3, 10),    # larger than the window: inner and border windows
    (2, 16, 64, 24, 40, 4, 10),
    (1, 16, 64, 13, 21, 2, 10),    # width not a multiple of the kernel's 8-pixel tiles
    (1, 16, 8, 6, 137, 2, 10),     # rows of 18 tiles: a full group of 16 and a short one
    (1, 128, 2048, 6, 9, 3, 10),   # PSPNet widths on a small map
    (2, 5, 13, 9, 11, 2, 3),       # odd channel counts, small radius
    (1, 16, 8, 20, 24, 3, 0),      # radius 0: the pixel itself only
    (1, 16, 64, 1, 1, 2, 10),      # a single pixel
])
def test_compiled_equals_torch_fp32(batch, key_channels, value_channels, height, width,
                                    frames, radius):
    key_scale = 0.6 if key_channels <= 16 else 0.2
    query, keys, values = fp32_inputs(batch, key_channels, value_channels, height, width, frames,
                                      seed=height * width + frames, key_scale=key_scale)
    compiled, plain = both_backends(query, keys, values, radius=radius)
    assert compiled.shape == plain.shape == (batch, value_channels, height, width)
    assert compiled.dtype == torch.float32
    assert (compiled - plain).abs().max().item() <= ATOL


@needs_kernel
def test_compiled_close_to_float64_reference():
    query, keys, values = random_memory_inputs(2, 16, 64, 24, 40, 4, key_scale=0.6, seed=5)
    expected = local_memory_attention_reference(query, keys, values)
    with torch.inference_mode():
        got = local_memory_attention(query.float(), [k.float() for k in keys],
                                     [v.float() for v in values], backend="compiled")
    assert (got.double() - expected).abs().max().item() <= 2e-6


@needs_kernel
def test_large_logits_are_stable():
    """Logits in the hundreds: the max-subtracted softmax neither overflows nor loses the
    out-of-map zeros (which then get a weight of about exp(-max) = 0)."""
    query, keys, values = fp32_inputs(1, 16, 8, 12, 16, 2, seed=7, key_scale=4.0)
    compiled, plain = both_backends(query, keys, values)
    assert torch.isfinite(compiled).all()
    assert (compiled - plain).abs().max().item() <= ATOL


@needs_kernel
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed"])
def test_non_contiguous_inputs(layout):
    query, keys, values = fp32_inputs(2, 16, 64, 24, 40, 3, seed=11)
    if layout == "channels_last":
        def make(t):
            return t.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":  # every other column of a map twice as wide
        def make(t):
            wide = torch.zeros(*t.shape[:3], 2 * t.shape[3])
            wide[..., ::2] = t
            return wide[..., ::2]
    else:  # stored (B, C, W, H), viewed as (B, C, H, W)
        def make(t):
            return t.transpose(2, 3).contiguous().transpose(2, 3)
    strided = [make(t) for t in (query, *keys, *values)]
    assert not any(t.is_contiguous() for t in strided)
    query_nc, keys_nc, values_nc = strided[0], strided[1:4], strided[4:]
    with torch.inference_mode():
        got = local_memory_attention(query_nc, keys_nc, values_nc, backend="compiled")
        expected = local_memory_attention(query, keys, values, backend="compiled")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@needs_kernel
def test_result_does_not_depend_on_threads():
    query, keys, values = fp32_inputs(2, 16, 64, 24, 40, 2, seed=13)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)  # the autouse fixture restores the setting
        with torch.inference_mode():
            outs.append(local_memory_attention(query, keys, values, backend="compiled"))
    assert torch.equal(outs[0], outs[1])


@needs_kernel
def test_golden_vectors_with_the_compiled_backend(monkeypatch):
    """The published network's logits (ERFNet, T = 4, 96x160) through the compiled kernel."""
    data = load_golden("lmanet_erfnet_T4_96x160.pt")
    model = build_model("lmanet_erfnet", memory_length=int(data["memory_length"])).eval()
    load_checkpoint(model, data["state_dict"])
    # "compiled" raises instead of falling back: every attention call below runs the kernel.
    monkeypatch.setenv(attention.BACKEND_ENV, "compiled")
    memory = None
    with torch.inference_mode():
        for index, frame in enumerate(data["frames"]):
            logits, memory = model.step(frame[None], memory)
            error = (logits[0] - data["logits"][index]).abs().max().item()
            assert error <= ATOL, f"frame {index}: max abs error {error:.2e}"


@pytest.mark.parametrize("case", ["float16", "bfloat16", "float64", "grad"])
def test_auto_takes_torch_where_the_kernel_does_not_apply(case, monkeypatch):
    query, keys, values = fp32_inputs(1, 16, 8, 9, 12, 2, seed=3)
    tensors = [query, *keys, *values]
    if case == "grad":
        tensors = [t.clone().requires_grad_() for t in tensors]
    else:
        tensors = [t.to(getattr(torch, case)) for t in tensors]
    query, keys, values = tensors[0], tensors[1:3], tensors[3:]
    calls = []
    tiled = attention._tiled_attention
    monkeypatch.setattr(attention, "_tiled_attention",
                        lambda *args: calls.append(1) or tiled(*args))
    out = local_memory_attention(query, keys, values)
    assert calls == [1] and out.dtype == query.dtype
    if case == "grad":
        out.sum().backward()
        assert query.grad is not None and keys[0].grad is not None
    with pytest.raises(ValueError, match="cannot take these inputs"):
        local_memory_attention(query, keys, values, backend="compiled")


@needs_kernel
@pytest.mark.parametrize("backend, env, uses_torch", [
    (None, None, False), ("auto", None, False), ("compiled", None, False),
    ("torch", None, True), (None, "torch", True), (None, "TORCH", True),
    (None, "compiled", False), ("auto", "torch", False),  # the argument wins over the variable
])
def test_switch_selects_the_backend(backend, env, uses_torch, monkeypatch):
    if env is not None:
        monkeypatch.setenv(attention.BACKEND_ENV, env)
    calls = []
    tiled = attention._tiled_attention
    monkeypatch.setattr(attention, "_tiled_attention",
                        lambda *args: calls.append(1) or tiled(*args))
    query, keys, values = fp32_inputs(1, 16, 8, 9, 12, 2)
    with torch.inference_mode():
        local_memory_attention(query, keys, values, backend=backend)
    assert bool(calls) == uses_torch


@needs_kernel
def test_attention_backend_reports_the_selection(monkeypatch):
    assert attention_backend() == f"compiled ({KERNEL_DETAIL})"
    monkeypatch.setenv(attention.BACKEND_ENV, "torch")
    assert attention_backend() == "torch (LMANET_ATTENTION=torch)"


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_bad_backend_names_raise(where, monkeypatch):
    query, keys, values = fp32_inputs(1, 4, 3, 5, 5, 1)
    kwargs = {}
    if where == "argument":
        kwargs["backend"] = "fast"
    else:
        monkeypatch.setenv(attention.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match="auto, compiled, torch"):
        local_memory_attention(query, keys, values, **kwargs)


def test_unavailable_kernel_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(_attention_ext, "load", lambda: (False, "not built (test)"))
    attention._compiled_kernel.cache_clear()
    try:
        query, keys, values = fp32_inputs(1, 16, 8, 9, 12, 2)
        with caplog.at_level(logging.WARNING, logger=attention.__name__):
            with torch.inference_mode():
                first = local_memory_attention(query, keys, values)
                second = local_memory_attention(query, keys, values)
                plain = local_memory_attention(query, keys, values, backend="torch")
            assert attention_backend() == "torch (compiled kernel unavailable: not built (test))"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "not built (test)" in warnings[0].getMessage()
        assert torch.equal(first, plain) and torch.equal(second, plain)
        with pytest.raises(RuntimeError, match="not built"):
            local_memory_attention(query, keys, values, backend="compiled")
        monkeypatch.setenv(attention.BACKEND_ENV, "compiled")
        assert attention_backend() == "unavailable (not built (test))"
    finally:
        attention._compiled_kernel.cache_clear()


def test_build_failure_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(_attention_ext, "LIBRARY_DIR", tmp_path)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="cannot run the C\\+\\+ compiler"):
        _attention_ext.build()
    assert not list(tmp_path.iterdir())  # no partial library left behind


def test_missing_source_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(_attention_ext, "SOURCE", tmp_path / "missing.cpp")
    available, reason = _attention_ext.load.__wrapped__()
    assert not available and "not installed" in reason


def test_library_name_follows_the_source_and_torch(monkeypatch):
    before = _attention_ext.library_path()
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert _attention_ext.library_path() != before
    assert _attention_ext.library_path().parent == _attention_ext.LIBRARY_DIR


@needs_kernel
def test_operator_checks_its_inputs():
    query, keys, values = fp32_inputs(1, 4, 3, 5, 5, 2)
    op = torch.ops.lmanet_ros.local_memory_attention
    with pytest.raises(RuntimeError, match="float32"):
        op(query.double(), keys, values, 10)
    with pytest.raises(RuntimeError, match="memory key 1"):
        op(query, [keys[0], keys[1][:, :2]], values, 10)
    with pytest.raises(RuntimeError, match="radius"):
        op(query, keys, values, -1)
