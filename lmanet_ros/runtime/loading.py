"""A registered network with its checkpoint loaded: what an export and a backend start from.

:func:`load_torch_model` is the one way a checkpoint value (a file, a state_dict mapping, None for
random weights, a weights tag such as ``demo``) becomes a model here; the settings it leaves open
follow the package's rules: the memory length by
:func:`~lmanet_ros.models.weights.resolve_memory_length`, the input size from the checkpoint's
metadata (:func:`~lmanet_ros.models.weights.trained_input_size`) unless given.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmanet_ros.classes import ClassSet
from lmanet_ros.models import Segmenter, build_model, load_checkpoint
from lmanet_ros.models.checkpoint import LoadReport
from lmanet_ros.models.weights import (Weights, resolve_checkpoint, resolve_memory_length,
                                       trained_input_size)

from .errors import BackendError

if TYPE_CHECKING:
    from .model import RuntimeModel

__all__ = ["LoadedModel", "load_torch_model", "state_digest", "with_model"]

Checkpoint = str | Path | Mapping[str, Any] | None


@dataclass(frozen=True)
class LoadedModel:
    """A model and where its weights came from.

    Attributes:
        model: the PyTorch network (eval mode), or the backend model that runs its graphs.
        report: the loader's report (None: random weights).
        weights: the packaged weights' record when the checkpoint was a tag, else None.
        source: the file or mapping that was loaded (None: random weights).
        backend_reason: why this backend runs, when ``auto`` chose it (else '').
    """

    model: Segmenter | RuntimeModel
    report: LoadReport | None
    weights: Weights | None
    source: str | Path | Mapping[str, Any] | None
    backend_reason: str = ""

    @property
    def metadata(self) -> dict[str, Any]:
        """The checkpoint's metadata ({} for random weights)."""
        return dict(self.report.metadata) if self.report is not None else {}

    @property
    def classes(self) -> ClassSet:
        """The classes the checkpoint's metadata names, else the Cityscapes ones."""
        stated = self.metadata.get("classes")
        return ClassSet.from_metadata(stated) if stated else ClassSet.cityscapes()

    @property
    def weights_id(self) -> str:
        """The weights' identity: the file's sha256, else ``state:<sha256 of the tensors>``."""
        if self.report is not None and self.report.sha256:
            return self.report.sha256
        return "state:" + state_digest(self.model)

    def fixed_input_size(self, explicit: tuple[int, int] | None, purpose: str
                         ) -> tuple[int, int]:
        """The (height, width) graphs are made for: ``explicit``, else the trained size.

        Raises:
            BackendError: neither is known (the message names the fix).
        """
        size = tuple(int(v) for v in explicit) if explicit else None
        if size and size[0] > 0 and size[1] > 0:
            return size
        trained = trained_input_size(self.metadata)
        if trained is None:
            raise BackendError(
                f"{purpose} runs graphs of a fixed input size, and none is known for these "
                f"weights (their metadata states no trained input_size): give one, e.g. "
                f"input_size=(256, 512) (lmanet eval/export --input-size 256x512, the node's "
                f"input_height and input_width)")
        return trained

    def apply_memory_length(self, explicit: int | None) -> int:
        """Set the model's T by :func:`resolve_memory_length` (explicit, metadata, own); returns
        it (0 for a single-frame model)."""
        length = resolve_memory_length(self.model.info, explicit, self.metadata)
        if self.model.info.temporal:
            self.model.memory_length = length
        return length


def load_torch_model(model_name: str, checkpoint: Checkpoint) -> LoadedModel:
    """Build ``model_name``, load ``checkpoint`` (a tag such as ``demo`` included), eval mode.

    Raises:
        ValueError: unknown model; FileNotFoundError, CheckpointError: the loader's errors.
    """
    source, weights = resolve_checkpoint(model_name, checkpoint)
    model = build_model(model_name)
    report = load_checkpoint(model, source) if source is not None else None
    return LoadedModel(model.eval(), report, weights, source)


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the model's state_dict tensors."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def with_model(loaded: LoadedModel, model: Segmenter | RuntimeModel) -> LoadedModel:
    """``loaded`` with another model (the backend model that runs its graphs)."""
    return dataclasses.replace(loaded, model=model)
