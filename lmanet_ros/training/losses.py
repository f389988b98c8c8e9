"""The training loss and its class weights.

Loss: NLL of log-softmax over the (B, 20, H, W) logits, class-weighted, void (trainId 255, mapped
to channel 19) weight 0. Auxiliary outputs (TDNet's sub-network prediction) add their own
weighted term, and an optional teacher (a single-frame network, TDNet's distillation) adds
``KL(teacher || output)`` per output with the same weights (:func:`clip_loss`). Class weights:
``erfnet`` is the ERFNet paper's fixed table for Cityscapes (the release's); ``frequency``
computes the same ENet-style formula
w_c = 1 / ln(1.10 + p_c) from the pixel frequencies p_c of the training labels (what the table is,
for Cityscapes), which suits other data such as ``lmanet synth``; ``auto`` picks ``erfnet`` for
Cityscapes and ``frequency`` otherwise; ``none`` weighs every class 1. Void always weighs 0.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lmanet_ros.training.config import CLASS_WEIGHTINGS, NUM_LOGITS, VOID_INDEX
from lmanet_ros.training.datasets import ClipDataset, label_histogram

__all__ = [
    "ENET_WEIGHT_C", "ERFNET_CLASS_WEIGHTS", "FREQUENCY_MAX_LABELS", "class_weights",
    "clip_loss", "distillation_kl", "frequency_class_weights", "labels_to_targets",
    "weighted_nll",
]

#: The constant c of the ENet weighting w = 1 / ln(c + p) that gives ERFNet's table.
ENET_WEIGHT_C = 1.10
#: ERFNet's class weights for Cityscapes (the full network's, used by the release), trainIds
#: 0..18 then void.
ERFNET_CLASS_WEIGHTS: tuple[float, ...] = (
    2.8149201869965, 6.9850029945374, 3.7890393733978, 9.9428062438965, 9.7702074050903,
    9.5110931396484, 10.311357498169, 10.026463508606, 4.6323022842407, 9.5608062744141,
    7.8698215484619, 9.5168733596802, 10.373730659485, 6.6616044044495, 10.260489463806,
    10.287888526917, 10.289801597595, 10.405355453491, 10.138095855713, 0.0)
#: Labels read for the ``frequency`` weighting (evenly spread over the training set).
FREQUENCY_MAX_LABELS = 1000


def frequency_class_weights(histogram: np.ndarray, *, c: float = ENET_WEIGHT_C) -> torch.Tensor:
    """Class weights w_c = 1 / ln(c + p_c) from trainId pixel counts (19,), void weight 0.

    p_c is the share of class c among the labelled (non-void) pixels; a class never seen gets
    the largest weight 1 / ln(c).
    """
    histogram = np.asarray(histogram, dtype=np.float64)
    if histogram.shape != (NUM_LOGITS - 1,) or (histogram < 0).any():
        raise ValueError(f"histogram must be {NUM_LOGITS - 1} non-negative counts, got shape "
                         f"{histogram.shape}")
    if not c > 1.0:
        raise ValueError(f"c must be > 1, got {c}")
    total = histogram.sum()
    share = histogram / total if total > 0 else np.zeros_like(histogram)
    weights = 1.0 / np.log(c + share)
    return torch.tensor([*weights.tolist(), 0.0], dtype=torch.float32)


def class_weights(weighting: str, dataset_kind: str, train_set: ClipDataset | None = None
                  ) -> tuple[torch.Tensor, str]:
    """The (20,) loss weights of ``weighting`` and the scheme actually used (``auto`` resolved)."""
    if weighting == "auto":
        weighting = "erfnet" if dataset_kind == "cityscapes" else "frequency"
    if weighting == "erfnet":
        return torch.tensor(ERFNET_CLASS_WEIGHTS, dtype=torch.float32), weighting
    if weighting == "none":
        weights = torch.ones(NUM_LOGITS)
        weights[VOID_INDEX] = 0.0
        return weights, weighting
    if weighting == "frequency":
        if train_set is None:
            raise ValueError("the frequency weighting needs the training set")
        histogram = label_histogram(train_set, max_labels=FREQUENCY_MAX_LABELS)
        return frequency_class_weights(histogram), weighting
    raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got '{weighting}'")


def labels_to_targets(labels: torch.Tensor) -> torch.Tensor:
    """uint8 trainId labels (void 255) -> int64 targets with void at channel 19."""
    targets = labels.long()
    targets[targets >= VOID_INDEX] = VOID_INDEX  # 255 (and any stray id) is void
    return targets


def weighted_nll(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                 ) -> torch.Tensor:
    """Class-weighted NLL of log-softmax, the weighted mean over pixels (void weighs 0).

    Equal to ``F.nll_loss(F.log_softmax(logits, 1), targets, weight=weights)``, but 0 rather
    than NaN for a batch without a labelled pixel.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    total = F.nll_loss(log_probs, targets, weight=weights, ignore_index=VOID_INDEX,
                       reduction="sum")
    valid = targets != VOID_INDEX
    norm = weights[targets[valid]].sum()
    return total / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def distillation_kl(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_teacher || p_student)`` at temperature 1, summed over the C channels and averaged
    over the B x H x W pixels (TDNet's distillation term): (B, C, H, W) logits each -> scalar."""
    if logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    log_student = F.log_softmax(logits.float(), dim=1)
    log_teacher = F.log_softmax(teacher_logits.float(), dim=1)
    pixels = logits.shape[0] * logits.shape[2] * logits.shape[3]
    return F.kl_div(log_student, log_teacher, reduction="sum", log_target=True) / max(pixels, 1)


def clip_loss(outputs: dict[str, torch.Tensor], targets: torch.Tensor, weights: torch.Tensor,
              auxiliary_weights: dict[str, float] | None = None,
              teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of a labelled frame's outputs.

    ``sum_o w_o (weighted_nll(o) + KL(teacher || o))`` over the outputs ``o``: ``"out"`` with
    weight 1 and each key of ``auxiliary_weights`` with its weight; the KL term only with a
    teacher.

    Args:
        outputs: ``{"out": (B, 20, H, W), ...}`` logits (``model(clips, outputs=True)``).
        targets: (B, H, W) int64 class ids, void = 19.
        weights: (20,) class weights, void 0.
        auxiliary_weights: loss weight of each auxiliary output (all must be in ``outputs``).
        teacher_logits: (B, 20, H, W) of a frozen single-frame network on the labelled frame.
    """
    terms = {"out": 1.0, **(auxiliary_weights or {})}
    missing = [name for name in terms if name not in outputs]
    if missing:
        raise ValueError(f"outputs {sorted(outputs)} lack {missing}")

    def term(logits: torch.Tensor) -> torch.Tensor:
        value = weighted_nll(logits, targets, weights)
        if teacher_logits is not None:
            value = value + distillation_kl(logits, teacher_logits)
        return value

    return torch.stack([weight * term(outputs[name]) for name, weight in terms.items()]).sum()
