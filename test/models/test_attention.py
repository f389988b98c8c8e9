"""Local memory attention: the fast tiled kernel equals the direct definition exactly."""
import functools
import math

import pytest
import torch

from lmanet_ros.models.attention import local_memory_attention, local_memory_attention_reference
from models_helpers import random_memory_inputs
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)


def per_pixel_definition(query, keys, values, radius):
    """The formula written pixel by pixel with Python loops (tiny maps only)."""
    batch, _, height, width = query.shape
    out = torch.zeros(batch, values[0].shape[1], height, width, dtype=query.dtype)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                logits, vectors = [], []
                for key, value in zip(keys, values):
                    for dy in range(-radius, radius + 1):
                        for dx in range(-radius, radius + 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < height and 0 <= xx < width:
                                logits.append(float(query[b, :, y, x] @ key[b, :, yy, xx]))
                                vectors.append(value[b, :, yy, xx])
                            else:  # zero padding: logit 0, value 0, still in the softmax
                                logits.append(0.0)
                                vectors.append(torch.zeros_like(value[b, :, 0, 0]))
                probs = torch.softmax(torch.tensor(logits, dtype=query.dtype), dim=0)
                out[b, :, y, x] = (probs[:, None] * torch.stack(vectors)).sum(0)
    return out


def test_reference_follows_the_per_pixel_definition():
    query, keys, values = random_memory_inputs(2, 3, 4, 5, 7, 2, key_scale=1.5)
    expected = per_pixel_definition(query, keys, values, radius=2)
    got = local_memory_attention_reference(query, keys, values, radius=2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch, height, width, frames, radius, tile, chunk", [
    (1, 13, 17, 3, 10, (8, 8), None),      # map smaller than the window: every window crosses
    (2, 32, 48, 4, 10, (8, 8), None),      # the golden feature size: inner and border windows
    (1, 32, 48, 4, 10, (8, 8), 5000),      # many chunks of one tile row
    (1, 30, 41, 2, 10, (4, 16), None),     # sizes not multiples of the tile
    (2, 9, 11, 1, 3, (3, 5), 700),         # odd tiles, small radius, T = 1
    (1, 3, 2, 2, 10, (8, 8), None),        # map smaller than one tile
    (1, 20, 24, 3, 0, (8, 8), None),       # radius 0: attention to the same pixel only
])
def test_fast_equals_reference_float64(batch, height, width, frames, radius, tile, chunk):
    query, keys, values = random_memory_inputs(batch, 16, 8, height, width, frames,
                                               key_scale=0.6, seed=height * width)
    expected = local_memory_attention_reference(query, keys, values, radius=radius)
    got = local_memory_attention(query, keys, values, radius=radius, tile=tile,
                                 chunk_elements=chunk)
    assert got.shape == expected.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)


def test_fast_fp32_close_to_float64_reference():
    query, keys, values = random_memory_inputs(1, 16, 64, 24, 40, 4, key_scale=0.6)
    expected = local_memory_attention_reference(query, keys, values)
    got = local_memory_attention(query.float(), [k.float() for k in keys],
                                 [v.float() for v in values])
    assert got.dtype == torch.float32
    assert (got.double() - expected).abs().max().item() <= 5e-6


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_half_precision_close_on_cpu(dtype, atol):
    query, keys, values = random_memory_inputs(1, 16, 32, 16, 24, 3, key_scale=0.5)
    query = query.to(dtype)
    keys, values = [k.to(dtype) for k in keys], [v.to(dtype) for v in values]
    expected = local_memory_attention_reference(query.double(), [k.double() for k in keys],
                                                [v.double() for v in values])
    got = local_memory_attention(query, keys, values)
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    assert (got.double() - expected).abs().max().item() <= atol


@pytest.mark.parametrize("variant", ["radius 9", "scaled logits", "per-frame softmax"])
def test_near_misses_are_told_apart(variant):
    """The comparison above detects the near misses the reference note lists."""
    query, keys, values = random_memory_inputs(1, 16, 8, 24, 32, 2, key_scale=0.6)
    expected = local_memory_attention_reference(query, keys, values)
    if variant == "radius 9":
        wrong = local_memory_attention(query, keys, values, radius=9)
    elif variant == "scaled logits":
        wrong = local_memory_attention(query / math.sqrt(16), keys, values)
    else:
        wrong = sum(local_memory_attention(query, [k], [v]) for k, v in zip(keys, values)) / 2
    assert (wrong - expected).abs().max().item() > 1e-3


@pytest.mark.parametrize("chunk", [None, 300])
def test_gradients_equal_reference(chunk):
    inputs = random_memory_inputs(2, 4, 3, 19, 12, 2, key_scale=0.8, seed=3)
    grads, outs = [], []
    tiled = functools.partial(local_memory_attention, tile=(4, 8), chunk_elements=chunk)
    for fn in (local_memory_attention_reference, tiled):
        query = inputs[0].clone().requires_grad_()
        keys = [k.clone().requires_grad_() for k in inputs[1]]
        values = [v.clone().requires_grad_() for v in inputs[2]]
        out = fn(query, keys, values, radius=3)
        outs.append(out.detach())
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([query.grad] + [k.grad for k in keys] + [v.grad for v in values])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-11)
    for reference, fast in zip(*grads):
        torch.testing.assert_close(fast, reference, rtol=0, atol=1e-11)


def test_inference_mode_and_no_grad_inputs():
    query, keys, values = random_memory_inputs(1, 16, 8, 8, 8, 2, dtype=torch.float32)
    with torch.inference_mode():
        out = local_memory_attention(query, keys, values)
    assert out.shape == (1, 8, 8, 8)


@pytest.mark.parametrize("bad", ["no frames", "key shape", "value size", "count", "radius"])
def test_bad_inputs_raise(bad):
    query, keys, values = random_memory_inputs(1, 4, 3, 6, 6, 2)
    kwargs = {}
    if bad == "no frames":
        keys, values = [], []
    elif bad == "key shape":
        keys = [keys[0][:, :2], keys[1]]
    elif bad == "value size":
        values = [values[0][..., :5], values[1]]
    elif bad == "count":
        values = values[:1]
    else:
        kwargs["radius"] = -1
    for fn in (local_memory_attention, local_memory_attention_reference):
        with pytest.raises(ValueError):
            fn(query, keys, values, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float16, 1e-2),
                                         (torch.bfloat16, 6e-2)])
def test_cuda_matches_reference(dtype, atol):
    query, keys, values = random_memory_inputs(2, 16, 64, 32, 48, 4, key_scale=0.6)
    expected = local_memory_attention_reference(query, keys, values)
    got = local_memory_attention(query.cuda().to(dtype), [k.cuda().to(dtype) for k in keys],
                                 [v.cuda().to(dtype) for v in values])
    assert got.dtype == dtype and got.is_cuda
    assert (got.double().cpu() - expected).abs().max().item() <= atol


@pytest.mark.slow
def test_full_size_features_equal_reference():
    """64x128 features (512x1024 input), T = 4: inner windows and all four borders."""
    query, keys, values = random_memory_inputs(1, 16, 64, 64, 128, 4, key_scale=0.6)
    expected = local_memory_attention_reference(query, keys, values)
    got64 = local_memory_attention(query, keys, values)
    torch.testing.assert_close(got64, expected, rtol=0, atol=1e-10)
    got32 = local_memory_attention(query.float(), [k.float() for k in keys],
                                   [v.float() for v in values])
    assert (got32.double() - expected).abs().max().item() <= 5e-6
