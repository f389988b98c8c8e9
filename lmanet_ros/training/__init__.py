"""Training of ``lmanet train``: ERFNet from scratch, then LMANet with the release's recipe.

The recipe (``shared/docs/lmanet-reference.md``, "Training recipe of the release"):

- samples are clips of T + 1 consecutive frames ending at a labelled frame (one frame for the
  single-frame ERFNet); the loss is on the last frame only;
- loss: NLL of log-softmax, class-weighted, void (trainId 255, mapped to channel 19) weight 0;
- Adam, lr 2e-4, betas (0.9, 0.999), weight decay 1e-4; ReduceLROnPlateau(factor 0.8, torch's
  default patience 10) stepped on each epoch's mean training loss;
- LMANet starts from single-frame weights (``init``); encoder and decoder are frozen
  (``requires_grad`` False), only the key/value projections and the fusion train.

Where we differ from the release, on purpose and switchable:

- ``frozen_mode="eval"`` (default) runs the frozen encoder and decoder in eval mode: their batch
  norm running statistics stay those of the single-frame network and their dropout is off. The
  release keeps the whole model in train mode, so those statistics drift towards the fused
  features, which also changes what the decoder does on the first frame of a stream (no memory).
  ``frozen_mode="train"`` reproduces the release.
- ``fusion_init="pca"`` (what the default ``auto`` picks for ERFNet's fusion) starts the query
  path (``kv_Q_r4.Value`` and the fusion) as a PCA pass-through of the encoder features, so that
  the untrained LMANet is nearly the single-frame network
  (:mod:`lmanet_ros.training.fusion_init` says why and how); ``random`` keeps the release's
  initialisation. Only initial values differ; the architecture does not.
- Class weights: ``frequency`` (from the training labels) where the data are not Cityscapes,
  beside the release's ERFNet table (:mod:`lmanet_ros.training.losses`).

The other temporal modules (TMANet, TDNet, STF and STF+MAR on ERFNet) train the same way, with
their recipes where they differ: ``fusion_init="passthrough"`` (what ``auto`` picks for them,
:mod:`lmanet_ros.training.passthrough_init`); TDNet starts every path's sub-network from the
single-frame ERFNet (``ModelEntry.single_frame_init``), trains path ``iteration mod m`` on the
labelled frame (``model(clips, outputs=True, iteration=i)``), adds its sub-network output's loss
(x0.5) and, with ``distill``, the KL to a single-frame teacher (its release's distillation;
its OHEM and grouped PSPNet teacher are not reproduced); STF clips the gradient norm at 0.1
(``grad_clip``); the Adam recipe above replaces the releases' SGD/AdamW schedules.

Modules, one job each: :mod:`~lmanet_ros.training.config` (the settings of a run and the names
shared by the others), :mod:`~lmanet_ros.training.datasets` (clip datasets: synthetic folders
and Cityscapes), :mod:`~lmanet_ros.training.losses` (loss and class weights),
:mod:`~lmanet_ros.training.fusion_init` (the PCA start of the query path),
:mod:`~lmanet_ros.training.passthrough_init` (the other modules' pass-through starts),
:mod:`~lmanet_ros.training.trainer` (the loop of one process: steps, validation, budgets, the
resumable state, logs and final weights) and :mod:`~lmanet_ros.training.launch` (one process,
spawned DDP processes or a torchrun rank; the reproducible command line).
"""
from lmanet_ros.training.config import (CHECKPOINT_NAME, CLASS_WEIGHTINGS, DEFAULT_FIRST_TARGET,
                                        FROZEN_MODES, LOG_NAME, NUM_LOGITS, VOID_INDEX,
                                        TrainConfig, TrainingError, TrainResult)
from lmanet_ros.training.datasets import (DATASET_KINDS, ClipDataset, DatasetError,
                                          build_clip_dataset)
from lmanet_ros.training.fusion_init import FUSION_INITS
from lmanet_ros.training.launch import command_line, train
from lmanet_ros.training.losses import (ERFNET_CLASS_WEIGHTS, class_weights, clip_loss,
                                        distillation_kl, frequency_class_weights,
                                        labels_to_targets, weighted_nll)
from lmanet_ros.training.trainer import RankContext, Trainer, miou_from_confusion, train_step

__all__ = [
    "CHECKPOINT_NAME", "CLASS_WEIGHTINGS", "DATASET_KINDS", "DEFAULT_FIRST_TARGET",
    "ERFNET_CLASS_WEIGHTS", "FROZEN_MODES", "FUSION_INITS", "LOG_NAME", "NUM_LOGITS",
    "VOID_INDEX", "ClipDataset", "DatasetError", "RankContext", "TrainConfig", "TrainResult",
    "Trainer", "TrainingError", "build_clip_dataset", "class_weights", "clip_loss",
    "command_line", "distillation_kl",
    "frequency_class_weights", "labels_to_targets", "miou_from_confusion", "train",
    "train_step", "weighted_nll",
]
