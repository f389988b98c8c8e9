"""Data-driven starts for TMANet's, TDNet's and STF's modules: each begins as a pass-through.

The same reason as LMANet's PCA start (:mod:`lmanet_ros.training.fusion_init`): the modules train
between a frozen encoder and a frozen decoder (TDNet: its sub-networks train, the decoder is
frozen), and a randomly initialised module hands the decoder features it never saw, so a short
budget starts from chance (trial on robot-v2, 128x256: validation mIoU 3 to 5 after the first
clips for TMANet and STF, against ERFNet's 45). Only initial values change; architecture and
state_dict names stay those of the published modules. Each start, from encoder feature maps of
training frames:

- TMANet (:class:`~lmanet_ros.models.tmanet.TemporalMemoryAttention`): the current frame's value
  path ``query_value_conv`` is the PCA projection onto its ``Cv`` principal directions (batch
  norms shifted so that the ReLUs stay linear), the bottleneck maps the coefficients back
  (reconstruction) and its batch norm restores the features' per-channel statistics; the
  bottleneck's weights on the memory read-out are damped (x ``damp``).
- TDNet (:class:`~lmanet_ros.models.tdnet.TemporallyDistributed`): every path's value projection
  is the identity and its spatial norm's affine the mean per-channel spatial std and mean of the
  sub-network features, so ``Norm_p(v_t)`` is close to ``z_t``; each hop's ``fc`` is damped and
  its bias zero, so the propagated term starts small.
- STF (:class:`~lmanet_ros.models.stf.SpatioTemporalFusion`, MAR included): every residual
  branch (attention output projections, FFN second linears) damped, biases zero, so each layer
  is close to its LayerNorm; the last LayerNorm's affine is the per-channel least-squares fit of
  the features on their layer-normalised version (LayerNorm removes each pixel's mean and scale,
  which no per-channel affine restores exactly: the report gives the relative error).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmanet_ros.models.stf import ClassMemoryAttention, SpatioTemporalFusion, _FeedForwardLayer
from lmanet_ros.models.tdnet import TemporallyDistributed
from lmanet_ros.models.tmanet import TemporalMemoryAttention
from lmanet_ros.training.fusion_init import principal_components

__all__ = ["passthrough_initialise", "supports_passthrough"]

_SUPPORTED = (TemporalMemoryAttention, TemporallyDistributed, SpatioTemporalFusion)


def supports_passthrough(module: nn.Module) -> bool:
    """Whether :func:`passthrough_initialise` applies to the temporal module ``module``."""
    return isinstance(module, _SUPPORTED)


def _assign(param: torch.Tensor, value: torch.Tensor) -> None:
    param.copy_(value.to(param.dtype))


def _vectors(maps: torch.Tensor) -> torch.Tensor:
    """(n, C, h, w) -> (n*h*w, C) float64."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).to(torch.float64)


def _relative_error(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error over the target's total variance (0 = exact)."""
    variance = ((target - target.mean(dim=0)) ** 2).sum(dim=1).mean().clamp_min(1e-12)
    return float(((estimate - target) ** 2).sum(dim=1).mean() / variance)


def _set_batch_norm(bn: nn.BatchNorm2d, weight: torch.Tensor | float, bias: torch.Tensor | float,
                    mean: torch.Tensor | float, variance: torch.Tensor | float) -> None:
    """Affine and running statistics of ``bn`` (tensors of its width, or scalars)."""
    for param, value in ((bn.weight, weight), (bn.bias, bias), (bn.running_mean, mean)):
        _assign(param, torch.as_tensor(value, dtype=torch.float64).expand(param.shape))
    var = torch.as_tensor(variance, dtype=torch.float64).expand(bn.running_var.shape)
    _assign(bn.running_var, (var - bn.eps).clamp_min(1e-8))


def _tmanet(module: TemporalMemoryAttention, maps: torch.Tensor, shift: float,
            damp: float) -> str:
    first, second = module.query_value_conv[0], module.query_value_conv[1]
    bottleneck = module.bottleneck
    components, channels = first.conv.out_channels, first.conv.in_channels
    if bottleneck.conv.out_channels != channels:
        raise ValueError(f"the bottleneck maps to {bottleneck.conv.out_channels} channels, not "
                         f"the features' {channels}: no pass-through")
    feats = _vectors(maps)
    mean, basis, variances, explained = principal_components(feats, components)
    scaled = basis * variances.sqrt()                                           # (C, V)
    first.conv.weight.zero_()
    _assign(first.conv.weight[:, :, 0, 0], basis.T)
    _set_batch_norm(first.bn, 1.0, shift, basis.T @ mean, variances)
    second.conv.weight.zero_()
    _assign(second.conv.weight[:, :, 1, 1], torch.eye(components, dtype=torch.float64))
    _set_batch_norm(second.bn, 1.0, shift, shift, 1.0)
    bottleneck.conv.weight[:, components:].mul_(damp)
    bottleneck.conv.weight[:, :components].zero_()
    _assign(bottleneck.conv.weight[:, :components, 1, 1], scaled)
    reconstruction = mean + ((feats - mean) @ basis) @ basis.T
    rec_mean, rec_std = reconstruction.mean(dim=0), reconstruction.std(dim=0).clamp_min(1e-3)
    _set_batch_norm(bottleneck.bn, rec_std, rec_mean, shift * scaled.sum(dim=1), rec_std ** 2)
    error = _relative_error(reconstruction.clamp_min(0), feats)
    return (f"TMANet value path = PCA of {feats.shape[0]} feature vectors ({components} "
            f"components, {100 * explained:.1f} % of the variance), relative error {error:.3f}")


def _tdnet(module: TemporallyDistributed, frames: torch.Tensor, damp: float) -> str:
    was_training = module.training
    module.subnets[0].eval()
    z = module.subnets[0](frames).to(torch.float64)          # every path starts as path 0
    module.subnets[0].train(was_training)
    if z.shape[1] != module.out_channels:
        raise ValueError(f"values have {module.out_channels} channels, the sub-network "
                         f"features {z.shape[1]}: no identity value projection")
    spatial_mean, spatial_std = z.mean(dim=(2, 3)), z.std(dim=(2, 3), unbiased=False)
    weight, bias = spatial_std.mean(dim=0), spatial_mean.mean(dim=0)
    for path in range(module.paths):
        value = module.encodings[path].value
        value.weight.zero_()
        _assign(value.weight[:, :, 0, 0], torch.eye(z.shape[1], dtype=torch.float64))
        value.bias.zero_()
        _assign(module.norms[path].weight, weight)
        _assign(module.norms[path].bias, bias)
        for hop in module.hops[path]:
            hop.weight.mul_(damp)
            hop.bias.zero_()
    normalised = (z - spatial_mean[..., None, None]) / (spatial_std[..., None, None] + 1e-5)
    estimate = normalised * weight[:, None, None] + bias[:, None, None]
    error = _relative_error(_vectors(estimate), _vectors(z))
    return (f"TDNet values = identity, spatial norms fitted on {z.shape[0]} frames of "
            f"sub-network features, hops damped x{damp:g}; relative error {error:.3f}")


def _layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def _fit_layer_norm(norm: nn.LayerNorm, inputs: torch.Tensor, target: torch.Tensor
                    ) -> torch.Tensor:
    """Set ``norm``'s affine to the per-channel least-squares fit of ``target`` (N, C) on
    ``LN(inputs)``; returns the fitted output (N, C)."""
    normalised = _layer_norm(inputs, norm.eps)
    centred = normalised - normalised.mean(dim=0)
    weight = ((centred * (target - target.mean(dim=0))).mean(dim=0)
              / (centred ** 2).mean(dim=0).clamp_min(1e-12))
    bias = target.mean(dim=0) - weight * normalised.mean(dim=0)
    _assign(norm.weight, weight)
    _assign(norm.bias, bias)
    return normalised * weight + bias


def _damp_branches(module: nn.Module, damp: float) -> None:
    """Damp the last linear of every residual branch (attention output projections, FFN
    ``linear2``, MAR's ``to_out``) and zero its bias."""
    for child in module.modules():
        if isinstance(child, nn.MultiheadAttention):
            last = child.out_proj
        elif isinstance(child, _FeedForwardLayer):
            last = child.linear2
        elif isinstance(child, ClassMemoryAttention):
            last = child.to_out[0]
        else:
            continue
        last.weight.mul_(damp)
        last.bias.zero_()


def _stf(module: SpatioTemporalFusion, maps: torch.Tensor, damp: float) -> str:
    feats = _vectors(maps)
    _damp_branches(module, damp)
    last_norm = module.STF.decoder["layers"][-1].norm3
    fused = _fit_layer_norm(last_norm, feats, feats)
    parts = "STF"
    if module.MAR is not None:
        fused = _fit_layer_norm(module.MAR.HEdecoder.norm2, fused, feats)
        parts = "STF + MAR"
    error = _relative_error(fused, feats)
    return (f"{parts} residual branches damped x{damp:g}, last LayerNorm fitted on "
            f"{feats.shape[0]} feature vectors; relative error {error:.3f}")


@torch.no_grad()
def passthrough_initialise(module: nn.Module, maps: torch.Tensor, *, shift: float = 4.0,
                           damp: float = 0.1) -> str:
    """Start ``module`` as a pass-through of its input (see the module docstring).

    Args:
        module: a TMANet, TDNet or STF temporal module.
        maps: what the module's ``step`` gets for sampled training frames: encoder features
            (n, C, h, w) for TMANet and STF, the padded frames (n, 3, H, W) for TDNet (its
            encoders are its sub-networks).
        shift: TMANet: batch-norm shift in standard deviations (keeps ReLUs linear).
        damp: factor on the initial weights of the branches that carry the memory.

    Returns:
        One line for the training log.

    Raises:
        ValueError: another module, or shapes that allow no pass-through.
    """
    if isinstance(module, TemporalMemoryAttention):
        return _tmanet(module, maps, shift, damp)
    if isinstance(module, TemporallyDistributed):
        return _tdnet(module, maps, damp)
    if isinstance(module, SpatioTemporalFusion):
        return _stf(module, maps, damp)
    raise ValueError(f"no pass-through start for {type(module).__name__}; supported: "
                     f"{', '.join(cls.__name__ for cls in _SUPPORTED)}")
