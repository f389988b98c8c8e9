"""The node's configuration without a running node: parameter table, config/lmanet.yaml,
validation reasons, launch arguments -> command line, the frame intake, message building."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_helpers import ROOT, wait_until
from lmanet_ros.node import launch_args
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES
from lmanet_ros.node.params import (CITYSCAPES_PALETTE, SPEC_BY_NAME, SPECS, Settings,
                                    descriptor, validate)


def _yaml_params() -> dict:
    return yaml.safe_load((ROOT / "config" / "lmanet.yaml").read_text())["/**"]["ros__parameters"]


def test_yaml_lists_every_parameter_with_its_default():
    from rclpy.parameter import Parameter
    values = _yaml_params()
    text = (ROOT / "config" / "lmanet.yaml").read_text()
    for spec in SPECS:
        if isinstance(spec.default, Parameter.Type):  # cameras: documented, commented out
            assert f"# {spec.name}:" in text
            continue
        assert spec.name in values, f"{spec.name} missing from config/lmanet.yaml"
        assert values[spec.name] == spec.default, spec.name
    assert set(values) <= set(SPEC_BY_NAME), set(values) - set(SPEC_BY_NAME)
    assert "one processing period apart" in text  # the latest-mode caveat is stated


def test_descriptors_carry_ranges_and_read_only():
    for name in ("model", "checkpoint", "device", "precision"):
        assert descriptor(SPEC_BY_NAME[name]).read_only
    assert not descriptor(SPEC_BY_NAME["overlay_alpha"]).read_only
    alpha = descriptor(SPEC_BY_NAME["overlay_alpha"]).floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)
    length = descriptor(SPEC_BY_NAME["memory.length"]).integer_range[0]
    assert (length.from_value, length.to_value) == (0, 32)  # 0: the model's own T
    assert "latest" in descriptor(SPEC_BY_NAME["processing_mode"]).additional_constraints
    assert all(descriptor(spec).description for spec in SPECS)
    # the names the model registry knows, looked up for the descriptor only (--help skips them)
    assert "Known models: erfnet, lmanet_erfnet" in descriptor(SPEC_BY_NAME["model"]).description
    assert "Known models" not in SPEC_BY_NAME["model"].description


def test_memory_length_zero_means_the_models_own():
    # the node passes memory.length (0 -> None) to the pipeline, which resolves it with this rule
    from lmanet_ros.models import resolve_memory_length

    def in_force(settings: Settings) -> int:
        return resolve_memory_length(settings.model, settings.memory_length or None, None)

    assert in_force(Settings()) == 4                              # lmanet_erfnet
    assert in_force(Settings(model="lmanet_pspnet101")) == 3     # the release's T
    assert in_force(Settings(model="lmanet_pspnet101", memory_length=5)) == 5


@pytest.mark.parametrize("changes, needle", [
    ({"palette": [1, 2, 3]}, "3 values (r, g, b) per class"),
    ({"palette": list(CITYSCAPES_PALETTE[:-1]) + [300]}, "outside 0..255"),
    ({"class_names": list(CITYSCAPES_CLASS_NAMES) + ["extra"]}, "palette must hold"),
    ({"class_names": ["a"] * 19}, "used twice"),
    ({"class_names": [""] + list(CITYSCAPES_CLASS_NAMES[1:])}, "empty"),
    ({"processing_mode": "fast"}, "processing_mode must be one of latest, all"),
    ({"input.transport": "theora"}, "raw, compressed"),
    ({"cameras": ["front", "front"]}, "unique"),
    ({"cameras": ["front/left"]}, "not a valid topic name"),
    ({"device": "tpu"}, "device must be"),
    ({"precision": "int8"}, "precision must be one of"),
])  # types and numeric ranges: test_node_param_types.py
def test_validate_refuses_with_a_reason(changes, needle):
    reason = validate(changes, Settings().as_dict(), num_classes=20)
    assert reason is not None and needle in reason, reason


def test_validate_accepts_and_knows_the_model_class_count():
    current = Settings().as_dict()
    assert validate({"overlay_alpha": 0.0, "memory.max_gap": 0.0}, current) is None
    assert validate({"input_height": 64, "input_width": 128}, current) is None
    assert validate({"cameras": ["front", "rear_2"]}, current) is None
    assert validate({"class_names": ["a", "b"], "palette": [0] * 6}, current,
                    num_classes=20) is None
    reason = validate({"class_names": [f"c{i}" for i in range(21)], "palette": [0] * 63},
                      current, num_classes=20)
    assert "the model has 20 outputs" in reason
    assert validate({"someone_elses": 1}, current) is None


def test_network_input_size_needs_both_dimensions():
    assert Settings().updated({"input_height": 64}).input_size == (0, 0)
    assert Settings().updated({"input_height": 64, "input_width": 96}).input_size == (64, 96)
    assert validate({"input_height": 64}, Settings().as_dict()) is None  # one after the other


def test_settings_snapshot_round_trip():
    settings = Settings().updated({"memory.max_gap": 2.5, "cameras": ["a"], "palette": [1] * 57})
    assert settings.memory_max_gap == 2.5 and settings.cameras == ("a",)
    assert settings.value("cameras") == ["a"]
    assert settings.as_dict()["memory.max_gap"] == 2.5


# ----------------------------------------------------------------------------- launch arguments
def test_launch_command_matches_the_launch_file_rules(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("{}")
    launch = launch_args.resolve({"image": "/camera/image_raw", "namespace": "robot1",
                                  "checkpoint": "/w/lmanet.pth", "device": "cpu",
                                  "backend": "openvino", "params_file": str(params),
                                  "cameras": ""})
    command = launch.command("lmanet_node")
    assert command[:4] == ["lmanet_node", "--ros-args", "--params-file", str(params)]
    text = " ".join(command)
    assert "-r image:=/camera/image_raw" in text
    assert "-r image/compressed:=/camera/image_raw/compressed" in text
    assert '-p checkpoint:="/w/lmanet.pth"' in text and '-p device:="cpu"' in text
    assert '-p backend:="openvino"' in text
    assert "-p use_sim_time:=false" in text
    assert "-r __ns:=/robot1" in text and "-r __node:=lmanet" in text
    assert launch.fully_qualified_name == "/robot1/lmanet"
    kwargs = launch.node_kwargs()
    assert kwargs["parameters"][0] == str(params)
    assert kwargs["parameters"][1]["checkpoint"] == "/w/lmanet.pth"
    assert ("image", "/camera/image_raw") in kwargs["remappings"]
    assert kwargs["executable"] == "lmanet_node" and kwargs["name"] == "lmanet"


def test_launch_defaults_and_cameras():
    launch = launch_args.resolve({"cameras": "front, rear", "use_sim_time": "True"})
    assert launch.remappings == ()
    assert launch.overrides == {"cameras": ["front", "rear"], "use_sim_time": True}
    assert Path(launch.params_file).name == "lmanet.yaml" and Path(launch.params_file).is_file()
    assert "-p cameras:=[\"front\", \"rear\"]" in " ".join(launch.command())
    assert launch.fully_qualified_name == "/lmanet"
    with pytest.raises(ValueError, match="unknown launch arguments: imge"):
        launch_args.resolve({"imge": "x"})
    with pytest.raises(ValueError, match="true or false"):
        launch_args.resolve({"use_sim_time": "maybe"})


def test_launch_file_uses_the_shared_module():
    text = (ROOT / "launch" / "lmanet.launch.py").read_text()
    assert "from lmanet_ros.node.launch_args import ARGUMENTS, resolve" in text
    names = {arg.name for arg in launch_args.ARGUMENTS}
    assert {"image", "cameras", "namespace", "params_file", "checkpoint", "device", "backend",
            "use_sim_time"} <= names


# ---------------------------------------------------------------------------------- the intake
def test_intake_latest_keeps_the_newest_and_counts_drops():
    from lmanet_ros.node.intake import FrameIntake
    intake = FrameIntake("latest")
    intake.add("a")
    intake.add("b")
    assert intake.put("a", 1) == 0
    assert intake.put("a", 2) == 1
    assert intake.put("b", 10) == 0
    assert sorted(intake.take(0.1)) == [("a", 2), ("b", 10)]
    assert intake.take(0.05) == []
    assert intake.put("unknown", 1) == 1


def test_intake_all_keeps_order_and_blocks_when_full():
    from lmanet_ros.node.intake import FrameIntake
    intake = FrameIntake("all", capacity=2)
    intake.add("a")
    assert intake.put("a", 1) == 0 and intake.put("a", 2) == 0
    done = threading.Event()

    def third():
        intake.put("a", 3)
        done.set()

    thread = threading.Thread(target=third, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert not done.is_set()  # full: the caller waits (backpressure), nothing is dropped
    assert intake.take(0.1) == [("a", 1)]
    wait_until(done.is_set, 2.0, what="the waiting put to finish")
    assert [intake.take(0.1), intake.take(0.1)] == [[("a", 2)], [("a", 3)]]
    intake.put("a", 4)
    intake.put("a", 5)
    assert intake.set_mode("latest") == {"a": 1}  # counted as one drop of camera a
    assert intake.take(0.1) == [("a", 5)]
    intake.close()
    thread.join(1.0)


def test_image_message_copies_header_and_pixels():
    from std_msgs.msg import Header

    from lmanet_ros.node.messages import image_message
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    msg = image_message(header, pixels[:, :, :], "rgb8")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, "rgb8")
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    assert np.array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7, 3), pixels)
    strided = image_message(header, pixels[:, ::2, 0], "mono8")  # non-contiguous input
    assert strided.step == 4 and bytes(strided.data) == pixels[:, ::2, 0].tobytes()
