"""Fixtures of the runtime tests: one graph cache for the whole session, so that each set of
graphs (demo ERFNet and LMANet-ERFNet at 64x128, T = 2) is exported once and shared by the export
and backend tests."""
from __future__ import annotations

import pytest

from runtime_helpers import MEMORY_LENGTH, SIZE

from lmanet_ros.runtime import build_backend_model


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory):
    """The session's graph cache folder."""
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="session")
def backend_model(graph_cache):
    """``backend_model(name, backend)``: the demo weights of ``name`` at :data:`SIZE` (T =
    :data:`MEMORY_LENGTH` for a temporal model) as a graph backend's LoadedModel, from the
    session's cache."""
    def build(name: str, backend: str = "onnxruntime", **options):
        options = {"input_size": SIZE, "memory_length": MEMORY_LENGTH, "num_threads": 1,
                   "cache_dir": graph_cache, **options}
        return build_backend_model(name, "demo", backend=backend, **options)
    return build
