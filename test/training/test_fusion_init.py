"""The PCA start of LMANet's query path (lmanet_ros.training.fusion_init), checked in float64."""
import pytest
import torch

from lmanet_ros.models import build_model
from lmanet_ros.models.memory import Memory
from lmanet_ros.models.temporal import LocalMemoryModule, SigmoidDownFusion
from lmanet_ros.training.datasets import build_clip_dataset
from lmanet_ros.training.fusion_init import (pca_initialise_query_path, sample_feature_maps,
                                             sample_features)
from training_helpers import write_synth_tree


def _features(channels: int, count: int, rank: int, seed: int = 0) -> torch.Tensor:
    """(count, channels) non-negative vectors of the given rank plus an offset, float64."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(rank, channels, generator=generator, dtype=torch.float64)
    latent = torch.randn(count, rank, generator=generator, dtype=torch.float64)
    return (latent @ mixing + 20.0).clamp_min(0.0)


@torch.no_grad()
def _fused(module: LocalMemoryModule, features: torch.Tensor, memory_scale: float = 1.0
           ) -> torch.Tensor:
    """The module's eval-mode output for features laid out as a (1, C, 1, N) map."""
    feature_map = features.T.unsqueeze(0).unsqueeze(2)
    keys, values = module.memory_entry(feature_map * memory_scale)
    return module.read(feature_map, Memory().push(keys, values, 2))[0, :, 0].T


def test_full_rank_pca_passes_features_through_unchanged():
    """Value width = input width: the untrained module returns the features (eval mode)."""
    torch.manual_seed(0)
    module = LocalMemoryModule(in_channels=8, key_channels=4, value_channels=8).double().eval()
    features = _features(8, 400, rank=8)
    report = pca_initialise_query_path(module, features, damp=0.0, shift=10.0)
    assert report.components == 8 and report.vectors == 400
    assert report.explained_variance == pytest.approx(1.0)
    assert report.reconstruction_error < 1e-12
    # damp=0 switches the memory path off entirely, whatever the memory holds
    torch.testing.assert_close(_fused(module, features, memory_scale=3.0), features,
                               rtol=0, atol=1e-9)


def test_truncated_pca_returns_the_reconstruction_and_reports_its_error():
    """Rank-5 features through a 6-wide value: exact; the report's error is the measured one."""
    torch.manual_seed(0)
    module = LocalMemoryModule(in_channels=10, key_channels=4, value_channels=6).double().eval()
    low_rank = _features(10, 500, rank=5, seed=1)
    report = pca_initialise_query_path(module, low_rank, damp=0.0, shift=10.0)
    assert report.reconstruction_error < 1e-12
    torch.testing.assert_close(_fused(module, low_rank), low_rank, rtol=0, atol=1e-9)

    full = _features(10, 500, rank=10, seed=2)
    report = pca_initialise_query_path(module, full, damp=0.0, shift=10.0)
    assert 0.0 < report.explained_variance < 1.0
    measured = ((_fused(module, full) - full) ** 2).sum(dim=1).mean()
    total = torch.linalg.eigvalsh(torch.cov(full.T)).clamp_min(0).sum()
    assert report.reconstruction_error == pytest.approx(float(measured / total), rel=1e-6)


def test_default_damping_keeps_a_small_trainable_memory_path():
    torch.manual_seed(0)
    module = LocalMemoryModule(in_channels=8, key_channels=4, value_channels=8).double().eval()
    features = _features(8, 300, rank=8)
    pca_initialise_query_path(module, features)
    with_memory = _fused(module, features)
    error = (with_memory - features).abs().max() / features.abs().max()
    assert 0.0 < error < 0.2  # a perturbation, not a replacement
    assert module.memory_fusion.conv_layer_4.bias.eq(-2.0).all()


def test_other_fusions_and_bad_features_are_refused():
    module = LocalMemoryModule(in_channels=8, key_channels=4, value_channels=None,
                               fusion=SigmoidDownFusion(8, 4))
    with pytest.raises(ValueError, match="sigmoid-do1"):
        pca_initialise_query_path(module, _features(8, 100, rank=8))
    module = LocalMemoryModule(in_channels=8, key_channels=4, value_channels=6)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        pca_initialise_query_path(module, torch.rand(100, 7))
    with pytest.raises(ValueError, match="more than 6"):
        pca_initialise_query_path(module, torch.rand(6, 8))


def test_sample_features_reads_encoder_vectors_of_last_frames(tmp_path):
    data = write_synth_tree(tmp_path)
    dataset = build_clip_dataset("synth", data, "train", clip_length=2)
    model = build_model("lmanet_erfnet", memory_length=1).train()
    cpu = torch.device("cpu")
    maps = sample_feature_maps(model, dataset, images=3, seed=0, device=cpu)
    assert maps.shape[:2] == (3, 128) and maps.dtype == torch.float32
    assert model.training  # left as it was
    vectors = sample_features(maps, max_vectors=50, seed=0)
    assert vectors.shape == (50, 128)
    again = sample_features(sample_feature_maps(model, dataset, images=3, seed=0, device=cpu),
                            max_vectors=50, seed=0)
    torch.testing.assert_close(vectors, again)  # seeded: the same on every DDP rank
    assert vectors.min() >= 0  # post-ReLU encoder features
    other = sample_features(sample_feature_maps(model, dataset, images=3, seed=1, device=cpu),
                            max_vectors=50, seed=1)
    assert not torch.equal(vectors, other)
