"""Data-driven start for LMANet's query path: the fusion begins as a PCA pass-through.

Why: LMANet trains with its encoder and decoder frozen, and the decoder only ever saw encoder
features ``f`` (128 channels for ERFNet). With the release's random initialisation, the fusion's
output ``fusion(vQ, mem)`` is unrelated to ``f`` at first, so the frozen decoder starts from
chance: on our synthetic data the training loss starts at 2.9 against the single-frame network's
0.85, and 3,000 clips of the published recipe only reach 1.5 (val mIoU 23 against 41). With
Cityscapes' 150,000 clips (50 epochs) the release can afford that; a short budget cannot.

What ``pca`` does (ERFNet's "sigmoid-do1" fusion,
:class:`lmanet_ros.models.temporal.SigmoidFusion`), from feature vectors ``f`` (N, C) of
training frames, with mean ``mu`` and the top-V principal directions ``U`` (C, V) and variances
``lam`` (V = value width, 64):

- ``kv_Q.Value``: centre tap ``U^T``, bias ``-U^T mu``, so ``vQ = U^T (f - mu)``;
- ``bn1``: weight 1, bias ``shift`` (4): ``a = ReLU(z + shift)`` with ``z`` the standardised
  coefficients stays linear in ``f`` (ReLU inactive down to -4 standard deviations);
- gates: ``conv3``/``conv4`` weights scaled by ``damp`` (0.1), biases +``gate``/-``gate`` (2):
  the query path passes at sigmoid(2) = 0.88, the memory path at 0.12; ``conv2`` scaled by
  ``damp``: the memory starts as a small perturbation and its weight is learnt;
- ``conv1``: centre tap and bias that map ``a`` back to ``mu + U sqrt(lam) z`` (divided by the
  gate), the PCA reconstruction of ``f``;
- ``bn``: weight and bias (and running statistics) set to the reconstruction's per-channel
  standard deviation and mean, so the batch normalisation hands it back unchanged.

The untrained module is then (up to the PCA truncation and the small memory term) the
single-frame network, and training only has to learn what the memory adds: in a trial on the
same data, the training loss started at 1.5 instead of 2.9 and reached the single-frame network's
level (0.85) within 150 clips. Only the initial values differ from the published recipe; the
architecture and the state_dict are unchanged. ``random`` keeps the release's initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lmanet_ros.models.temporal import SigmoidFusion

__all__ = ["FUSION_INITS", "PcaInitReport", "pca_initialise_query_path", "principal_components",
           "sample_feature_maps", "sample_features", "supports_pca"]

#: ``--fusion-init`` choices: ``pca`` (above), ``passthrough`` (TMANet's, TDNet's and STF's
#: modules, :mod:`lmanet_ros.training.passthrough_init`), ``random`` (the releases'
#: initialisation) or ``auto`` (``pca`` where :func:`supports_pca`, else ``passthrough`` where it
#: applies, else ``random``).
FUSION_INITS = ("auto", "pca", "passthrough", "random")


@dataclass(frozen=True)
class PcaInitReport:
    """What :func:`pca_initialise_query_path` did.

    Attributes:
        vectors: feature vectors (pixels) the PCA used.
        components: principal directions kept (the value width).
        explained_variance: fraction of the features' variance those directions hold.
        reconstruction_error: mean squared error of ReLU(PCA reconstruction) against the
            features, relative to their total variance (0 = exact).
    """

    vectors: int
    components: int
    explained_variance: float
    reconstruction_error: float

    def summary(self) -> str:
        """One line for the training log."""
        return (f"query path initialised by PCA of {self.vectors} feature vectors: "
                f"{self.components} components hold {100 * self.explained_variance:.1f} % of "
                f"the variance, relative reconstruction error {self.reconstruction_error:.3f}")


def supports_pca(module: nn.Module) -> bool:
    """Whether :func:`pca_initialise_query_path` applies to the temporal module ``module``."""
    fusion = getattr(module, "memory_fusion", None)
    key_value = getattr(module, "kv_Q_r4", None)
    return (isinstance(fusion, SigmoidFusion) and key_value is not None
            and isinstance(getattr(key_value, "Value", None), nn.Conv2d))


@torch.no_grad()
def pca_initialise_query_path(module: nn.Module, features: torch.Tensor, *, shift: float = 4.0,
                              gate: float = 2.0, damp: float = 0.1) -> PcaInitReport:
    """Initialise ``kv_Q_r4.Value`` and ``memory_fusion`` of ``module`` as a PCA pass-through.

    Args:
        module: the temporal module (:class:`lmanet_ros.models.temporal.LocalMemoryModule` with
            a ``SigmoidFusion``, i.e. LMANet on ERFNet).
        features: (N, C) encoder feature vectors (one per pixel), C = the module's input width.
        shift: bias of ``bn1`` in standard deviations (keeps its ReLU linear).
        gate: logit of the initial gates (+gate on the query path, -gate on the memory path).
        damp: factor on the initial weights of the gate convolutions and the memory path.

    Raises:
        ValueError: the module has another fusion, or ``features`` has the wrong shape or fewer
            vectors than components.
    """
    if not supports_pca(module):
        raise ValueError(f"PCA initialisation needs LMANet's sigmoid-do1 fusion (ERFNet); "
                         f"{type(module).__name__} has "
                         f"{type(getattr(module, 'memory_fusion', None)).__name__}: use 'random'")
    value_conv: nn.Conv2d = module.kv_Q_r4.Value
    fusion: SigmoidFusion = module.memory_fusion
    channels, components = value_conv.in_channels, value_conv.out_channels
    if features.dim() != 2 or features.shape[1] != channels:
        raise ValueError(f"features must be (N, {channels}), got {tuple(features.shape)}")
    if features.shape[0] <= components:
        raise ValueError(f"PCA of {components} components needs more than {components} "
                         f"feature vectors, got {features.shape[0]}")
    feats = features.to(torch.float64)
    mean, basis, variances, explained = principal_components(feats, components)
    scaled_basis = basis * variances.sqrt()                             # (C, V)
    gate_value = torch.sigmoid(torch.tensor(gate, dtype=torch.float64))

    def assign(param: torch.Tensor, value: torch.Tensor) -> None:
        param.copy_(value.to(param.dtype))

    value_conv.weight.zero_()
    assign(value_conv.weight[:, :, 1, 1], basis.T)
    assign(value_conv.bias, -basis.T @ mean)
    fusion.bn1.weight.fill_(1.0)
    fusion.bn1.bias.fill_(shift)
    fusion.bn1.running_mean.zero_()
    assign(fusion.bn1.running_var, variances - fusion.bn1.eps)
    fusion.conv_layer_3.weight.mul_(damp)
    fusion.conv_layer_3.bias.fill_(gate)
    fusion.conv_layer_4.weight.mul_(damp)
    fusion.conv_layer_4.bias.fill_(-gate)
    fusion.conv_layer_2.weight.mul_(damp)
    fusion.conv_layer_2.bias.zero_()
    fusion.conv_layer_1.weight.zero_()
    assign(fusion.conv_layer_1.weight[:, :, 1, 1], scaled_basis / gate_value)
    assign(fusion.conv_layer_1.bias, (mean - shift * scaled_basis.sum(dim=1)) / gate_value)
    standardised = (feats - mean) @ basis / variances.sqrt()
    reconstruction = mean + standardised @ scaled_basis.T
    rec_mean, rec_std = reconstruction.mean(dim=0), reconstruction.std(dim=0).clamp_min(1e-3)
    assign(fusion.bn.weight, rec_std)
    assign(fusion.bn.bias, rec_mean)
    assign(fusion.bn.running_mean, rec_mean)
    assign(fusion.bn.running_var, (rec_std ** 2 - fusion.bn.eps).clamp_min(1e-8))
    total_variance = variances.sum() / explained
    error = ((reconstruction.clamp_min(0) - feats) ** 2).sum(dim=1).mean() / total_variance
    return PcaInitReport(vectors=int(feats.shape[0]), components=components,
                         explained_variance=float(explained), reconstruction_error=float(error))


def principal_components(features: torch.Tensor, components: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """PCA of (N, C) vectors: (mean (C,), top directions (C, V), their variances (V,), the
    share of the total variance they hold), float64."""
    feats = features.to(torch.float64)
    mean = feats.mean(dim=0)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((feats - mean).T))
    order = eigenvalues.argsort(descending=True)[:components]
    variances = eigenvalues[order].clamp_min(1e-8)
    total = eigenvalues.clamp_min(0).sum().clamp_min(1e-12)
    return mean, eigenvectors[:, order], variances, float(variances.sum() / total)


@torch.no_grad()
def sample_feature_maps(model: nn.Module, dataset: Dataset, *, images: int, seed: int,
                        device: torch.device) -> torch.Tensor:
    """Encoder feature maps of the last frame of ``images`` clips drawn from ``dataset``.

    Args:
        model: a temporal segmenter (``encoder`` and ``_prepare`` as in
            :class:`lmanet_ros.models.segmenter.Segmenter`); run in eval mode, left as it was.
        dataset: yields (frames (N, 3, H, W) uint8, labels); labels are not used.
        images: clips to draw (a seeded random choice).
        seed: the draw's seed (the same on every DDP rank: identical initialisation).
        device: where the encoder runs.

    Returns:
        (images, C, h, w) float32 on the CPU: what the temporal module's ``step`` gets.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:images].tolist()
    loader = DataLoader(dataset, batch_size=4, sampler=chosen, num_workers=0)
    was_training = model.training
    model.eval()
    maps = []
    for frames, _labels in loader:
        last = frames[:, -1].to(device).float().div_(255.0)
        maps.append(model.encoder(model._prepare(last)).float().cpu())
    model.train(was_training)
    return torch.cat(maps)


def sample_features(maps: torch.Tensor, *, max_vectors: int, seed: int) -> torch.Tensor:
    """(n, C, h, w) feature maps -> at most ``max_vectors`` (N, C) feature vectors (pixels, a
    seeded random subset)."""
    stacked = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
    if stacked.shape[0] > max_vectors:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(stacked.shape[0], generator=generator)[:max_vectors]
        stacked = stacked[keep]
    return stacked
