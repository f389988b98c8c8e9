"""The offline evaluation with ``backend``: metrics.json, report.md and report.html name the
backend that ran, and the scores of the onnxruntime run are the torch run's (same labels)."""
from __future__ import annotations

import onnxruntime
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from runtime_helpers import MEMORY_LENGTH, SIZE

from eval_helpers import IMAGE, LABELS, load, write_scene_bag
from lmanet_ros.evaluation import EvalOptions, evaluate
from lmanet_ros.runtime import CACHE_ENV

FRAMES = 5


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_scene_bag(tmp_path_factory.mktemp("bag") / "bag", n=FRAMES, size=SIZE)


def _evaluate(bag, out, backend: str) -> dict:
    evaluate(EvalOptions(bag=bag, out=out, model="lmanet_erfnet", checkpoint="demo",
                         image_topics=[IMAGE], label_topic=LABELS, device="cpu", num_threads=1,
                         backend=backend, input_size=SIZE, memory_length=MEMORY_LENGTH,
                         video=False, plots=False))
    return load(out)


def test_metrics_and_reports_name_the_backend_that_ran(bag, tmp_path, graph_cache,
                                                       monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(graph_cache))  # the session's graphs of the demo weights
    ran = _evaluate(bag, tmp_path / "onnxruntime", "onnxruntime")
    reference = _evaluate(bag, tmp_path / "torch", "torch")
    named = f"onnxruntime {onnxruntime.__version__}"
    assert ran["parameters"]["backend"] == named
    assert reference["parameters"]["backend"] == f"torch {torch.__version__}"
    model, expected = ran["models"][0], reference["models"][0]
    assert (model["backend"], model["backend_version"]) == ("onnxruntime",
                                                            onnxruntime.__version__)
    assert model["frames"] == expected["frames"] == FRAMES
    assert model["accuracy"] == expected["accuracy"]  # the same labels, frame by frame
    assert model["temporal_consistency"] == expected["temporal_consistency"]
    for report in ("report.md", "report.html"):
        assert f"backend = {named}" in (tmp_path / "onnxruntime" / report).read_text(), report
