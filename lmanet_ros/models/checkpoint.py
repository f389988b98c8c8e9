"""Loading and saving weights: published ``.pth`` files, wrappers, safetensors, strict reports.

:func:`load_checkpoint` reads a path (``.pth``, ``.pth.tar``, ``.pt``, ``.pkl``: ``torch.load``
with ``weights_only=True``, never unpickling code; ``.safetensors``) or a state_dict mapping,
unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"model_state": ...}`` (TDNet's
training files), strips the ``module.`` (DDP) and ``_orig_mod.``
(torch.compile) prefixes, and loads strictly: missing keys, unexpected keys and shape mismatches
raise :class:`CheckpointError` naming them. One exception is allowed on purpose: a single-frame
checkpoint (no key of the temporal parts) loads into a temporal model, which keeps its temporal
parts as initialised (LMANet training starts so); the single-frame ``encoder.output_conv`` is then
ignored. The returned :class:`LoadReport` says what happened, with the checkpoint's metadata and
the file's sha256.

semseg's single-frame PSPNet checkpoints (keys ``layer0`` .. ``layer4``, ``ppm``, ``cls``,
``aux``) load too, into ``pspnet*`` and, as a single-frame checkpoint, into ``lmanet_pspnet*``:
``layerN.*`` becomes ``encoder.layerN.*``, ``cls.*`` becomes ``decoder.cls.*`` (19 outputs, like
ours: the void channel is appended by the model, not learnt), and the auxiliary training head
``aux.*`` is ignored (reported in ``LoadReport.ignored``).

A checkpoint whose metadata states a ``normalisation`` other than the model's is refused: the
weights would silently see differently scaled inputs.

A path is examined before it is read (:func:`checkpoint_file`): a directory, a device such as
``/dev/zero``, a FIFO, a socket, an empty or unreadable file is refused at once with what it is,
never read (``/dev/zero`` would be read forever).

:func:`save_checkpoint` writes safetensors (optionally fp16/bf16) with JSON metadata, including
the model's input normalisation.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CheckpointError", "UnsafeCheckpointError", "LoadReport", "load_checkpoint",
           "save_checkpoint", "read_state_dict", "checkpoint_file", "file_sha256",
           "normalisation_metadata"]

#: Key prefixes removed before matching: DistributedDataParallel, torch.compile.
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
#: Wrapper keys whose mapping value is the state_dict, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model", "model_state")
#: Keys of a torch checkpoint dict that may hold metadata.
METADATA_KEYS = ("meta", "metadata")
#: Keys of the single-frame network that a temporal model does not have and ignores.
SINGLE_FRAME_ONLY_PREFIXES = ("encoder.output_conv.",)
#: semseg's PSPNet key layout: a checkpoint with ``layer0.*`` keys and no ``encoder.*`` key.
SEMSEG_RENAMES = ((re.compile(r"^layer(\d+)\."), r"encoder.layer\1."),
                  (re.compile(r"^cls\."), "decoder.cls."))
#: Keys of semseg's PSPNet that no model here has: the auxiliary training head.
SEMSEG_IGNORED_PREFIXES = ("aux.",)
_SAFETENSORS_SUFFIX = ".safetensors"
_UNSTATED = object()
_LIST_LIMIT = 6


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model.

    Attributes ``missing``, ``unexpected`` (key names) and ``mismatched`` (key, checkpoint
    shape, model shape) hold the full lists; the message is one line.
    """

    def __init__(self, message: str, *, missing: tuple[str, ...] = (),
                 unexpected: tuple[str, ...] = (),
                 mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
                 ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)


class UnsafeCheckpointError(CheckpointError):
    """A pickle that holds more than tensors and plain containers (it could run code)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        source: the path read, or ``"<state_dict>"`` for a mapping.
        format: ``"safetensors"``, ``"torch"`` or ``"mapping"``.
        sha256: hex digest of the file (None for a mapping): identifies the weights.
        loaded: model keys loaded from the checkpoint.
        initialised: top-level parts of the model left entirely as initialised (e.g.
            ``("kv_M_r4", "kv_Q_r4", "memory_fusion")`` for a single-frame checkpoint).
        missing: model keys not in the checkpoint (beyond the parts above only with
            ``strict=False``; ``num_batches_tracked`` of older checkpoints is tolerated).
        unexpected: checkpoint keys the model does not have, not loaded (``strict=False``).
        ignored: checkpoint keys skipped on purpose (``encoder.output_conv.*`` of a single-frame
            checkpoint loaded into a temporal model; ``aux.*`` of a semseg PSPNet checkpoint).
        stripped_prefixes: prefixes removed from the keys (``module.``, ``_orig_mod.``).
        wrapper: the wrapper key the state_dict was found under (``state_dict``, ``model``).
        metadata: metadata stored with the checkpoint (safetensors metadata, JSON values
            decoded; or a ``meta``/``metadata`` dict), e.g. classes, palette, memory_length.
        layout: the released layout the keys were renamed from (``"semseg"``: semseg's PSPNet;
            a model's own ``from_published_state_dict`` names its layouts), else None.
    """

    source: str
    format: str
    sha256: str | None
    loaded: tuple[str, ...]
    initialised: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    stripped_prefixes: tuple[str, ...] = ()
    wrapper: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None

    def summary(self) -> str:
        """One line for logs."""
        optional = ((self.sha256, lambda: f"sha256 {self.sha256[:12]}"),
                    (self.initialised, lambda: f"left initialised: {', '.join(self.initialised)}"),
                    (self.missing, lambda: f"{len(self.missing)} missing"),
                    (self.unexpected, lambda: f"{len(self.unexpected)} unexpected"),
                    (self.ignored, lambda: f"ignored {_short_list(self.ignored)}"))
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"
                 + (f" ({self.layout} layout)" if self.layout else "")]
        parts += [text() for present, text in optional if present]
        return "; ".join(parts)


def _short_list(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f" (+{len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else "")


#: What a path that is not a regular file is, by its ``st_mode`` test.
_FILE_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` (``~`` expanded) once it is known to be a non-empty regular file this process can
    read; examined with ``stat`` and opened, never read, so a device or FIFO fails at once.

    Raises:
        FileNotFoundError: nothing is at ``path`` (or a symbolic link there points nowhere).
        CheckpointError: a directory, not a regular file (device, FIFO, socket), empty, not
            readable, or a path that cannot be examined; the message says which.
    """
    path = Path(path).expanduser()
    try:
        info = os.stat(path)
    except FileNotFoundError:
        dangling = " (a symbolic link to a missing file)" if os.path.islink(path) else ""
        raise FileNotFoundError(f"checkpoint file not found: {path}{dangling}") from None
    except OSError as error:  # EACCES on a parent, ENOTDIR, ELOOP, ...
        raise CheckpointError(f"checkpoint {path} cannot be examined: "
                              f"{error.strerror or error}") from None
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"checkpoint {path} is a directory, not a file: name the .pth, "
                              f".pt or .safetensors file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        raise CheckpointError(f"checkpoint {path} is not a regular file: it is {kind}")
    if info.st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:  # non-blocking: a FIFO swapped in after the stat cannot hang the open
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} is not readable: "
                              f"{error.strerror or error}") from None
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode_metadata(raw: Mapping[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key == "format" and value == "pt":  # safetensors' own marker, not ours
            continue
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _unpickler_reason(message: str) -> str:
    """The specific reason in torch's long weights-only error message, on one line."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    marker = "WeightsUnpickler error:"
    reason = message.split(marker, 1)[1] if marker in message else message
    reason = " ".join(reason.split())
    return reason.split(". Please use", 1)[0].split(" Check the documentation", 1)[0] or \
        "unknown reason"


def _read_file(path: Path) -> tuple[Any, dict[str, Any], str]:
    """Read a checkpoint file: (object, safetensors metadata, format)."""
    if path.name.endswith(_SAFETENSORS_SUFFIX):
        from safetensors import SafetensorError, safe_open

        try:
            tensors = {}
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = _decode_metadata(handle.metadata())
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot read safetensors file {path}: "
                                  f"{str(error).splitlines()[0]}") from error
        return tensors, metadata, "safetensors"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(str(error))
        if "Unsupported global" in reason or "Unsupported class" in reason:
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it pickles objects other than tensors and plain "
                f"containers, which could run code (torch.load with weights_only=True; convert "
                f"it to safetensors where it can be trusted): {reason}") from error
        raise CheckpointError(f"cannot read checkpoint {path}: the weights-only unpickler "
                              f"rejected it (corrupt file, or not a plain tensor pickle): "
                              f"{reason}") from error
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as error:
        # IndexError/KeyError: the unpickler's stacks on bytes that are no pickle at all.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a checkpoint this loader "
                              f"reads ({type(error).__name__}: {first})") from error
    return obj, {}, "torch"


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``source`` and return (state_dict with prefixes stripped, details).

    ``details`` holds ``format``, ``sha256``, ``wrapper``, ``stripped_prefixes``, ``metadata``
    and ``source``. Raises FileNotFoundError for a missing file, CheckpointError
    (UnsafeCheckpointError for code in a pickle) otherwise, e.g. for a path that is no regular
    file (:func:`checkpoint_file`).
    """
    details: dict[str, Any] = {"wrapper": None, "sha256": None}
    metadata: dict[str, Any] = {}
    if isinstance(source, Mapping):
        obj: Any = source
        details.update(format="mapping", source="<state_dict>")
    elif isinstance(source, (str, os.PathLike)):
        path = checkpoint_file(source)
        obj, metadata, fmt = _read_file(path)
        details.update(format=fmt, source=str(path), sha256=file_sha256(path))
    else:
        raise CheckpointError(f"checkpoint source must be a path or a state_dict mapping, got "
                              f"{type(source).__name__}")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {details['source']} holds a {type(obj).__name__}, "
                              f"not a state_dict")
    for key in METADATA_KEYS:
        if isinstance(obj.get(key), Mapping):
            metadata = {**dict(obj[key]), **metadata}
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj, details["wrapper"] = obj[key], key
            break
    state: dict[str, torch.Tensor] = {}
    stripped: list[str] = []
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {details['source']} is not a state_dict: entries "
                              f"{_short_list(not_tensors)} are not tensors")
    for key, tensor in obj.items():
        name = str(key)
        changed = True
        while changed:
            changed = False
            for prefix in STRIPPED_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    changed = True
                    if prefix not in stripped:
                        stripped.append(prefix)
        if name in state:
            raise CheckpointError(f"checkpoint {details['source']} has key '{name}' twice after "
                                  f"removing the prefixes {STRIPPED_PREFIXES}")
        state[name] = tensor
    details.update(stripped_prefixes=tuple(stripped), metadata=metadata)
    return state, details


def _from_semseg(state: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], tuple[str, ...]] | None:
    """Rename a semseg PSPNet state_dict to ours: (state, ignored keys); None if it is not one."""
    if "layer0.0.weight" not in state or any(k.startswith("encoder.") for k in state):
        return None
    renamed: dict[str, torch.Tensor] = {}
    ignored = tuple(k for k in state if k.startswith(SEMSEG_IGNORED_PREFIXES))
    for key, tensor in state.items():
        if key in ignored:
            continue
        for pattern, replacement in SEMSEG_RENAMES:
            key = pattern.sub(replacement, key)
        renamed[key] = tensor
    return renamed, ignored


def _from_published(model: nn.Module, state: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], tuple[str, ...], str] | None:
    """A released checkpoint layout the model itself knows (TMANet's mmseg files, TDNet's
    ``.pkl``, ST_Memory's): the model's ``from_published_state_dict(state)`` returns (state in
    our names, keys ignored on purpose, the layout's name), or None when ``state`` is not in a
    layout it knows; the result is then matched strictly like any other state_dict."""
    adapter = getattr(model, "from_published_state_dict", None)
    return adapter(state) if callable(adapter) else None


def normalisation_metadata(model: nn.Module) -> dict[str, list[float]] | None:
    """The model's input normalisation as metadata (None: none, ERFNet).

    ``{"mean": [...], "std": [...]}``: ``(x - mean) / std`` per RGB channel of x in [0, 1].
    """
    info = model.info
    return None if info.mean is None else {"mean": list(info.mean), "std": list(info.std)}


def _same_json(first: Any, second: Any) -> bool:
    """Whether two values are equal as JSON (tuples equal lists); False if one is not JSON."""
    try:
        return json.loads(json.dumps(first)) == json.loads(json.dumps(second))
    except (TypeError, ValueError):
        return False


def _temporal_parts(model: nn.Module) -> tuple[str, ...]:
    temporal = getattr(model, "temporal_module", None)
    if temporal is None:
        return ()
    return tuple(name for name, _ in temporal.named_children())


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, Any],
                    strict: bool = True) -> LoadReport:
    """Load weights into ``model`` and report what was loaded.

    Args:
        model: a model of :mod:`lmanet_ros.models` (any nn.Module works).
        source: a ``.pth``/``.pth.tar``/``.pt``/``.safetensors`` path, or a state_dict mapping.
        strict: refuse missing and unexpected keys (shape mismatches are always refused).

    Raises:
        FileNotFoundError: nothing is at the path.
        UnsafeCheckpointError: the pickle holds code or arbitrary objects.
        CheckpointError: unreadable file, not a state_dict, or keys/shapes that do not fit.
    """
    state, details = read_state_dict(source)
    expected = model.state_dict()
    name = getattr(getattr(model, "info", None), "name", type(model).__name__)
    stated = details["metadata"].get("normalisation", _UNSTATED)
    if (stated is not _UNSTATED and hasattr(model, "info")
            and not _same_json(stated, normalisation_metadata(model))):
        raise CheckpointError(f"checkpoint {details['source']} was saved for input normalisation "
                              f"{stated} but model '{name}' applies "
                              f"{normalisation_metadata(model)}")
    layout = None
    semseg = _from_semseg(state)
    if semseg is not None:
        state, semseg_ignored = semseg
        layout = "semseg"
    published = _from_published(model, state)
    if published is not None:
        state, published_ignored, layout = published

    parts = _temporal_parts(model)
    single_frame = bool(parts) and not any(k.split(".", 1)[0] in parts for k in state)
    allowed_missing = ({k for k in expected if k.split(".", 1)[0] in parts}
                       if single_frame else set())
    ignored = tuple(k for k in state if single_frame and k not in expected
                    and k.startswith(SINGLE_FRAME_ONLY_PREFIXES))
    if semseg is not None:
        ignored += semseg_ignored
    if published is not None:
        ignored += published_ignored

    missing = [k for k in expected if k not in state and k not in allowed_missing
               and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected and k not in ignored]
    mismatched = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in state
                  if k in expected and state[k].shape != expected[k].shape]
    if mismatched or (strict and (missing or unexpected)):
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_short_list(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_short_list(unexpected)}")
        if mismatched:
            shown = [f"{k} (checkpoint {list(a)}, model {list(b)})" for k, a, b in mismatched]
            problems.append(f"{len(mismatched)} shape mismatches: {_short_list(shown)}")
        raise CheckpointError(f"checkpoint {details['source']} does not fit model '{name}': "
                              + "; ".join(problems),
                              missing=tuple(missing), unexpected=tuple(unexpected),
                              mismatched=tuple(mismatched))

    to_load = {k: v for k, v in state.items() if k in expected}
    result = model.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen after the checks above; never load silently
        raise CheckpointError(f"unexpected keys while loading: "
                              f"{_short_list(result.unexpected_keys)}")

    not_loaded = [k for k in expected if k not in to_load]
    top_level = {}
    for key in expected:
        top_level.setdefault(key.split(".", 1)[0], []).append(key)
    initialised = tuple(part for part, keys in top_level.items()
                        if all(k in not_loaded or k.endswith(".num_batches_tracked")
                               for k in keys)
                        and any(k in not_loaded for k in keys))
    return LoadReport(
        source=details["source"], format=details["format"], sha256=details["sha256"],
        loaded=tuple(to_load), initialised=initialised,
        missing=tuple(k for k in not_loaded if k.split(".", 1)[0] not in initialised),
        unexpected=tuple(unexpected), ignored=ignored,
        stripped_prefixes=details["stripped_prefixes"], wrapper=details["wrapper"],
        metadata=details["metadata"], layout=layout)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *,
                    metadata: Mapping[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write the model's state_dict as safetensors with JSON metadata; return the path.

    Args:
        model: the model to save.
        path: destination, ending in ``.safetensors`` (written atomically).
        metadata: JSON-serialisable values (e.g. classes, palette, memory_length, source,
            metrics). ``model``, ``num_classes``, ``normalisation`` (see
            :func:`normalisation_metadata`) and ``memory_length`` are added from ``model.info``
            unless given; a ``model``/``num_classes``/``normalisation`` that contradicts it
            raises.
        dtype: cast floating tensors (``torch.float16``, ``torch.bfloat16``, ``torch.float32``).

    Raises:
        ValueError: bad path suffix, dtype, or metadata.
    """
    path = Path(path).expanduser()
    if not path.name.endswith(_SAFETENSORS_SUFFIX):
        raise ValueError(f"save_checkpoint writes safetensors: the path must end with "
                         f"'{_SAFETENSORS_SUFFIX}', got {path}")
    if dtype not in (None, torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be None, torch.float16, torch.bfloat16 or torch.float32, "
                         f"got {dtype}")
    entries: dict[str, Any] = dict(metadata or {})
    info = getattr(model, "info", None)
    if info is not None:
        for key, value in (("model", info.name), ("num_classes", info.num_classes),
                           ("normalisation", normalisation_metadata(model))):
            if key in entries and not _same_json(entries[key], value):
                raise ValueError(f"metadata {key}={entries[key]!r} contradicts the model "
                                 f"({value!r})")
            entries[key] = value
        if info.temporal:
            entries.setdefault("memory_length", info.memory_length)
    encoded = {"format": "pt"}
    for key, value in entries.items():
        if not isinstance(key, str):
            raise ValueError(f"metadata keys must be strings, got {key!r}")
        try:
            encoded[key] = json.dumps(value)
        except TypeError as error:
            raise ValueError(f"metadata '{key}' is not JSON-serialisable: {error}") from error

    tensors = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous()

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=encoded)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
