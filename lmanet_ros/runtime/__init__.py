"""Deployment runtimes: the network step exported to ONNX and run by onnxruntime or OpenVINO.

Layers: :mod:`.graphs` (the step as a graph of one fill level, its inputs and outputs),
:mod:`.split` (LMANet's step as three graphs around the attention kernel),
:mod:`.export` (torch -> verified ONNX files with metadata; :func:`export_onnx`, ``lmanet
export``), :mod:`.verify` (the check against PyTorch), :mod:`.metadata` (what a file says about
itself), :mod:`.cache` (graphs on disk keyed by weights, model, input size and T),
:mod:`.sessions` with :mod:`.ort_backend` and :mod:`.openvino_backend` (a compiled graph behind
one interface), :mod:`.model` (:class:`RuntimeModel`, the pipeline's drop-in) and :mod:`.build`
(:func:`load_model`: the model of a backend from a model name and a checkpoint).

Design:

- one graph per memory fill level k = 0..T, each exact for its k (LMANet's joint softmax over
  the T * P * P logits depends on how many frames the memory holds; see :mod:`.export` for why
  not one graph with a fill mask), batch 1, fixed input size, opset 18: what ``lmanet export``
  writes; for LMANet the backends run the split layout (:mod:`.split`: three graphs, the
  attention between them in the compiled kernel), ``layout="fill"`` the fill-level graphs;
- the memory stays the PyTorch model's immutable memory type holding tensors: the graphs take
  the k frames as explicit inputs and return the new frame's entry, the FIFO bookkeeping is the
  memory type's own (:mod:`.model`), so the pipeline batches, splits and resets it unchanged;
- a backend takes any torch checkpoint (``demo`` included) and exports on a cache miss; a missing
  package or an unknown input size is an error, never a fall-back;
- wired in by :meth:`~lmanet_ros.pipeline.SegmentationPipeline.from_pretrained`'s ``backend``
  (the node's ``backend`` parameter, ``lmanet eval --backend``, the benchmarks' ``--backend``);
  ``auto`` (the node's default, :func:`auto_backend`) takes the fastest installed one where a
  graph backend can run the weights as asked, else torch, and says why.

Measured (``benchmarks/backend_latency.py --threads 1 --repeats 10``, 256x512, demo weights,
LMANet T = 4, a 2-core host): step ms and ratio to torch with the compiled attention kernel:
erfnet torch 154, onnxruntime 92 (0.59x), openvino 95 (0.61x); lmanet_erfnet torch 223 (plain
attention 269), split layout onnxruntime 148 (0.66x), openvino 154 (0.69x), fill-level graphs
onnxruntime 192 (0.86x), openvino 140 (0.63x; 0.90x in an earlier run). The convolutions run
faster in both runtimes; in onnxruntime the attention subgraph of the fill-level graphs does
not (an earlier session's profile of the fill-4 graph: most of its time in two 7-D Transposes
that materialise the window regions, the tiled attention's unfold + permute, a strided-view copy
in PyTorch); split, the same step measured 73 ms encode + 44 ms compiled attention + 38 ms
decode_fused = 151 ms against 235 ms in PyTorch: hence the split layout (:mod:`.split`), which
the backends use for LMANet (OpenVINO ran the fill-level graphs faster in this run: not
switched). ``lmanet eval`` p50 on a 40-frame 256x512 bag, demo lmanet_erfnet, one
thread (``benchmarks/eval_backends.py``): onnxruntime 0.67x torch, openvino 0.70x, the same
scores. The graphs match PyTorch to about 1e-6 (relative to max(1, |output|)) at every fill
level, checked to 1e-4 by the tests.

TensorRT (a GPU machine; not run here): the files are plain static-shape ONNX graphs, one per
fill level, so each becomes one engine::

    lmanet export lmanet_erfnet --checkpoint demo --format onnx --out lmanet.onnx \\
        --input-size 256x512 --memory-length 4            # lmanet.fill0.onnx .. fill4.onnx
    for k in 0 1 2 3 4; do
        trtexec --onnx=lmanet.fill$k.onnx --saveEngine=lmanet.fill$k.plan \\
            --memPoolSize=workspace:2048              # add --fp16 for half precision
    done
    polygraphy run lmanet.fill4.onnx --trt --onnxrt --atol 1e-4 --rtol 1e-4   # check

The inputs and outputs (names, shapes, the memory's order) are in each file's metadata
(``lmanet.memory_inputs``, ``lmanet.memory_outputs``; :func:`read_metadata`); a TensorRT runner
keeps the newest T entries per stream and feeds them to the engine of their count. With
``--fp16``, keep the attention's softmax in float32 (``--precisionConstraints=obey
--layerPrecisions=...``) or compare the labels before trusting it.
"""
from .build import (AUTO, AUTO_PREFERENCE, BACKEND_CHOICES, auto_backend, build_backend_model,
                    check_backend, load_model)
from .cache import CACHE_ENV, CachedGraphs, GraphCache, default_cache_dir
from .errors import BackendError, BackendUnavailable, ExportError
from .export import OPSET, export_graphs, export_onnx, export_split_graphs, graph_paths
from .loading import LoadedModel, load_torch_model
from .metadata import read_metadata
from .model import RuntimeModel
from .sessions import BACKENDS, GRAPH_BACKENDS, GraphSession, backend_version, open_session
from .split import LAYOUTS, supports_split

__all__ = [
    "AUTO", "AUTO_PREFERENCE", "BACKEND_CHOICES", "BACKENDS", "GRAPH_BACKENDS", "LAYOUTS",
    "OPSET", "CACHE_ENV", "BackendError", "BackendUnavailable", "ExportError", "CachedGraphs",
    "GraphCache", "GraphSession", "LoadedModel", "RuntimeModel", "auto_backend",
    "backend_version", "build_backend_model", "check_backend", "default_cache_dir",
    "export_graphs", "export_onnx", "export_split_graphs", "graph_paths", "load_model",
    "load_torch_model", "open_session", "read_metadata", "supports_split",
]
