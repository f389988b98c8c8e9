"""Every registered model of the ERFNet family is a name that ``lmanet eval --model/--compare``
and the node's ``model`` parameter take: no list of names is hard-coded anywhere in between.

Parsing only (``NAME`` and ``NAME:demo`` as ``--compare`` defines them; whether a model has demo
weights is the loader's business), the node's parameter validation (ROS-free, no DDS), and the
node's startup check of the name with random weights."""
from pathlib import Path

import pytest
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from process_helpers import LineLog

from lmanet_ros.models import list_models
from lmanet_ros.node.loading import load_pipeline
from lmanet_ros.node.params import Settings, validate
from lmanet_ros.tools import cli
from lmanet_ros.tools import eval as eval_tool

#: erfnet and every model registered on it, as the registry has them now.
FAMILY = [name for name in list_models() if name == "erfnet" or name.endswith("_erfnet")]


def test_the_family_holds_the_temporal_modules():
    assert {"erfnet", "lmanet_erfnet", "tmanet_erfnet", "tdnet_erfnet", "stf_erfnet",
            "stf_mar_erfnet"} <= set(FAMILY)


@pytest.mark.parametrize("name", FAMILY)
def test_eval_takes_the_name_as_model_and_in_compare_specs(name):
    args = cli.build_parser().parse_args(
        ["eval", "bag", "--out", "out", "--model", name, "--compare", name, f"{name}:demo",
         "erfnet:demo"])
    options = eval_tool.options_from_args(args)
    assert [(s.name, s.checkpoint) for s in options.specs] == [
        (name, None), (name, None), (name, "demo"), ("erfnet", "demo")]
    assert len({s.label for s in options.specs}) == 4
    assert options.bag == Path("bag")


@pytest.mark.parametrize("name", FAMILY)
def test_the_node_parameter_takes_the_name(name):
    assert validate({"model": name}, Settings().as_dict()) is None
    pipeline = load_pipeline(Settings(model=name, device="cpu", num_threads=1), LineLog())
    assert pipeline.model.info.name == name
