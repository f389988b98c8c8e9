"""The graph cache: exported graphs kept on disk, keyed by weights, model, input size and T.

A backend takes any torch checkpoint and runs graphs exported from it; the export (seconds per
fill level) happens once per key, later builds find the files. The folder is ``$LMANET_CACHE``
when set, else ``~/.cache/lmanet_ros/onnx``; one sub-folder per key::

    <cache>/<model>-<H>x<W>-T<T>-<key hash>/step.fill<k>.onnx   (k = 0..T; step.onnx: 1 frame)
    <cache>/<model>-<H>x<W>-split-<key hash>/<graph>.onnx       (the split layout, any T)

The key hash is the sha256 of the checkpoint's sha256 (or the state_dict's digest for weights
that are not a file), the model, the input size, T (not for the split layout: its graphs serve
every T), the layout, the graph format and the opset. Each file is
written atomically after it was verified against PyTorch (:mod:`.export`), so a file in its
key's folder is a complete, checked graph: a cache hit reads nothing but the graph itself (no
``onnx`` package needed then). Processes that miss the same key at once both export and the last
rename wins; the files are equal. Delete a folder (or the cache) to force a new export.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .export import OPSET, export_graphs, export_split_graphs, graph_paths
from .graphs import check_exportable
from .loading import LoadedModel
from .metadata import GRAPH_FORMAT
from .split import SPLIT_GRAPHS, resolve_layout

__all__ = ["CACHE_ENV", "default_cache_dir", "CachedGraphs", "GraphCache"]

#: Environment variable naming the cache folder.
CACHE_ENV = "LMANET_CACHE"
#: The graph file's name in a key's folder (before the fill level, see ``graph_paths``).
GRAPH_NAME = "step.onnx"


def default_cache_dir() -> Path:
    """``$LMANET_CACHE`` when set (and not empty), else ``~/.cache/lmanet_ros/onnx``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else (
        Path.home() / ".cache" / "lmanet_ros" / "onnx")


@dataclass(frozen=True)
class CachedGraphs:
    """The graphs of one key.

    Attributes:
        folder: the key's folder.
        layout: ``fill`` or ``split`` (:mod:`.split`).
        paths: fill level -> graph file, for every fill level 0..T (layout ``fill``); graph
            name -> file (``split``).
        exported: the fill levels or graph names exported by this call (empty: a cache hit).
    """

    folder: Path
    layout: str
    paths: dict[int | str, Path]
    exported: tuple[int | str, ...]


class GraphCache:
    """Exported graphs on disk (see the module docstring); ``root`` None: the default folder."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def folder(self, loaded: LoadedModel, input_size: tuple[int, int], layout: str = "fill"
               ) -> Path:
        """The folder of ``loaded``'s graphs of ``layout`` (``fill``: for its model's current
        T) at ``input_size``."""
        info = loaded.model.info
        key = {"weights": loaded.weights_id, "model": info.name,
               "input_size": list(input_size), "format": GRAPH_FORMAT, "opset": OPSET}
        if layout == "fill":
            key["memory_length"] = info.memory_length
        else:
            key["layout"] = layout
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        height, width = input_size
        tag = f"T{info.memory_length}" if layout == "fill" else layout
        return self.root / f"{info.name}-{height}x{width}-{tag}-{digest[:16]}"

    def graphs(self, loaded: LoadedModel, input_size: tuple[int, int], layout: str = "fill"
               ) -> CachedGraphs:
        """The graphs of ``loaded.model`` at ``input_size``: layout ``fill``, one per fill level
        of its current T; ``split``, the three of :mod:`.split`. Those not in the cache yet
        are exported.

        Raises:
            BackendError, ExportError, BackendUnavailable: see
            :func:`~lmanet_ros.runtime.export.export_graph` and
            :func:`~lmanet_ros.runtime.export.export_split_graphs` (only on a miss).
        """
        check_exportable(loaded.model)
        layout = resolve_layout(loaded.model, layout)
        folder = self.folder(loaded, input_size, layout)
        if layout == "split":
            paths: dict[int | str, Path] = {name: folder / f"{name}.onnx"
                                            for name in SPLIT_GRAPHS}
        else:
            paths = dict(graph_paths(folder / GRAPH_NAME, range(loaded.model.memory_length + 1)))
        missing = tuple(key for key, path in paths.items() if not path.is_file())
        if missing and layout == "split":
            export_split_graphs(loaded, folder, input_size, only=missing)
        elif missing:
            export_graphs(loaded, folder / GRAPH_NAME, input_size, only=missing)
        return CachedGraphs(folder, layout, paths, missing)
