"""The temporal-module interface: memory types of their own, batch keys, a module-agnostic pipeline.

A toy module with a TDNet-like memory (a phase counter that is part of the batch key, plus the
last frame's features) runs through TemporalSegmenter and SegmentationPipeline unchanged.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from torch import nn

from lmanet_ros.models import LocalMemoryModule, TemporalSegmenter
from lmanet_ros.models.memory import FeatureMemory, FrameFIFO, Memory, TemporalMemory
from lmanet_ros.models.temporal import TemporalModule
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns


@dataclass(frozen=True)
class PhaseMemory(TemporalMemory):
    """Frames stepped modulo 2 (streams batch only at equal phase) and the last features."""

    phase: int = 0
    last: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.last is None else 1

    @property
    def batch_size(self) -> int:
        return 0 if self.last is None else int(self.last.shape[0])

    def batch_key(self) -> Hashable:
        return PhaseMemory, self.phase, None if self.last is None else tuple(self.last.shape[1:])

    @classmethod
    def cat_batch(cls, memories: Sequence[PhaseMemory]) -> PhaseMemory:
        if len({memory.batch_key() for memory in memories}) != 1:
            raise ValueError("phase memories of different keys")
        if memories[0].last is None:
            return memories[0]
        return cls(memories[0].phase, torch.cat([memory.last for memory in memories]))

    def split_batch(self) -> list[PhaseMemory]:
        return [PhaseMemory(self.phase, part) for part in self.last.split(1)]

    def to(self, device=None, dtype=None) -> PhaseMemory:
        return PhaseMemory(self.phase, self.last.to(device=device, dtype=dtype))

    def check_fits(self, features: torch.Tensor) -> None:
        if self.last.shape != features.shape:
            raise ValueError(f"phase memory {tuple(self.last.shape)} vs {tuple(features.shape)}")


class PhaseModule(TemporalModule):
    """Path ``phase`` (a 1x1 convolution) on the features, plus the last frame's features."""

    memory_type = PhaseMemory

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.paths = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in range(2)])
        self.out_channels = channels

    def step(self, features, memory, *, memory_length, update_memory=True):
        fused = self.paths[memory.phase](features)
        if memory.last is not None:
            fused = fused + memory.last
        return fused, PhaseMemory((memory.phase + 1) % 2, features)


def phase_model(seed: int = 0) -> TemporalSegmenter:
    torch.manual_seed(seed)
    return TemporalSegmenter("phase_toy", nn.Conv2d(3, 8, 8, stride=8), PhaseModule(8),
                             nn.ConvTranspose2d(8, 20, 8, stride=8), num_classes=20,
                             memory_length=1).eval()


def frames_of(stream: str, count: int, seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(stream, rng.integers(0, 256, (32, 64, 3), dtype=np.uint8),
                  seconds_to_ns(i / 17), "cam") for i in range(count)]


# ---------------------------------------------------------------------------- memory types
def _features(length: int, batch: int = 1, fill: float = 0.0) -> FeatureMemory:
    return FeatureMemory(tuple(torch.full((batch, 3, 2, 4), fill + i) for i in range(length)))


def test_memory_types_implement_the_interface():
    for memory in (Memory(), FeatureMemory(), PhaseMemory()):
        assert isinstance(memory, TemporalMemory) and len(memory) == 0
    assert issubclass(Memory, FrameFIFO) and issubclass(FeatureMemory, FrameFIFO)
    features = _features(2)
    same_fill = Memory(features.features, features.features)
    assert features.batch_key() == (FeatureMemory, 2, (2, 4))
    assert same_fill.batch_key() != features.batch_key()  # a type of its own: never mixed
    assert _features(1).batch_key() != features.batch_key()
    with pytest.raises(TypeError):
        TemporalMemory()


def test_feature_memory_fifo_cat_split_and_validation():
    memory = FeatureMemory()
    for i in range(4):
        memory = memory.append((torch.full((1, 3, 2, 4), float(i)),), 2)
    assert len(memory) == 2 and [f[0, 0, 0, 0].item() for f in memory.features] == [2.0, 3.0]
    joined = FeatureMemory.cat_batch([_features(2), _features(2, batch=2, fill=10.0)])
    assert joined.batch_size == 3 and len(joined.split_batch()) == 3
    assert torch.equal(joined.split_batch()[2].features[1], torch.full((1, 3, 2, 4), 11.0))
    assert joined.to(dtype=torch.float16).features[0].dtype == torch.float16
    with pytest.raises(ValueError, match="equal length"):
        FeatureMemory.cat_batch([_features(1), _features(2)])
    with pytest.raises(ValueError, match="not a FeatureMemory"):
        FeatureMemory.cat_batch([_features(1), Memory(*(_features(1).features,) * 2)])
    with pytest.raises(ValueError, match="1 tensors"):
        memory.append((memory.features[0], memory.features[0]), 2)
    with pytest.raises(ValueError):
        FeatureMemory((torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 2, 5)))
    with pytest.raises(ValueError):
        FeatureMemory((torch.zeros(1, 3, 2, 4), torch.zeros(1, 4, 2, 4)))


# --------------------------------------------------------------------------- the modules
def test_lmanet_module_step_pushes_the_raw_key_value_and_reads_the_newest_frames():
    torch.manual_seed(0)
    module = LocalMemoryModule(in_channels=8, key_channels=4, value_channels=6).eval()
    assert isinstance(module.empty_memory(), Memory) and len(module.empty_memory()) == 0
    features = [torch.rand(1, 8, 4, 6) for _ in range(4)]
    with torch.no_grad():
        fused, memory = module.step(features[0], module.empty_memory(), memory_length=2)
        torch.testing.assert_close(fused, features[0], rtol=0, atol=0)
        for x in features[1:3]:
            _, memory = module.step(x, memory, memory_length=2)
        assert len(memory) == 2
        fused, newer = module.step(features[3], memory, memory_length=1)
        torch.testing.assert_close(fused, module.read(features[3], memory.truncate(1)))
        torch.testing.assert_close(newer.keys[0], module.kv_M_r4.Key(features[3]))
        assert len(newer) == 1
        _, kept = module.step(features[3], memory, memory_length=2, update_memory=False)
        assert kept is memory


def test_a_module_with_its_own_memory_runs_in_the_segmenter():
    model = phase_model()
    x = torch.rand(2, 3, 30, 60)
    with torch.no_grad():
        logits, memory = model.step(x, None)
        assert logits.shape == (2, 20, 30, 60) and memory.phase == 1 and len(memory) == 1
        logits2, memory2 = model.step(x, memory)
        features = model.encoder(model._prepare(x))
        expected = model.decoder(model.paths[1](features) + features)[:, :, :30, :60]
        torch.testing.assert_close(logits2, expected)
        assert memory2.phase == 0
        assert model.step(x, memory, update_memory=False)[1] is memory
        with pytest.raises(ValueError, match="PhaseMemory"):
            model.step(x, Memory())
    assert [name for name, _ in model.named_children()] == ["encoder", "paths", "decoder"]


def test_pipeline_groups_streams_by_the_memory_batch_key():
    """Streams batch only when their memories' keys agree (here: equal phase)."""
    together, alone_a, alone_b = phase_model(), phase_model(), phase_model()
    pipelines = [SegmentationPipeline(model) for model in (together, alone_a, alone_b)]
    together, alone_a, alone_b = pipelines
    frames_a, frames_b = frames_of("a", 5, 1), frames_of("b", 3, 2)
    results = [together.process([frames_a[0]])]                    # a: phase 1
    results.append(together.process([frames_a[1], frames_b[0]]))   # b has no memory
    results.append(together.process([frames_a[2], frames_b[1]]))   # equal fill, phases 0, 1
    results.append(together.process([frames_a[3]]))                # a: phase 1 -> 0
    results.append(together.process([frames_a[4], frames_b[2]]))   # both phase 0: one batch
    assert [[r.batch_size for r in round_] for round_ in results] == [[1], [1, 1], [1, 1], [1],
                                                                      [2, 2]]
    expected_a = alone_a.process(frames_a)
    expected_b = alone_b.process(frames_b)
    got_a = [round_[0] for round_ in results]
    got_b = [round_[1] for round_ in results if len(round_) == 2]
    for got, expected in zip(got_a + got_b, expected_a + expected_b):
        assert np.array_equal(got.labels, expected.labels)
        assert got.memory_fill == expected.memory_fill == 1
    assert together.stats("b").memory_fill == 1
    together.reset("a")
    (after_reset,) = together.process([frames_of("a", 1, 1)[0]])
    assert after_reset.reset_reason == "request"
    assert np.array_equal(after_reset.labels, expected_a[0].labels)
