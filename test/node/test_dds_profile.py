"""The dds_profile launch argument: the Fast DDS environment of the node (no ROS here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmanet_ros.node import launch_args
from lmanet_ros.node.launch_args import dds_environment, dds_transport, resolve

PROFILE = "FASTDDS_DEFAULT_PROFILES_FILE"


def test_named_profiles():
    shm_udp = dds_environment("shm_udp")
    assert Path(shm_udp[PROFILE]).name == "fastdds_shm_udp.xml"
    assert Path(shm_udp[PROFILE]).is_file()
    assert Path(dds_environment("loopback_shm")[PROFILE]).name == "fastdds_shm.xml"
    assert dds_environment("large_data") == {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    assert dds_environment("default") == {}


def test_auto_keeps_the_shells_choice(tmp_path):
    assert dds_environment("auto", {}) == dds_environment(launch_args.DEFAULT_DDS_PROFILE)
    assert dds_environment("auto", {PROFILE: "/robot/fastdds.xml"}) == {}
    assert dds_environment("auto", {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}) == {}
    profile = tmp_path / "mine.xml"
    profile.write_text("<dds/>")
    assert dds_environment(str(profile)) == {PROFILE: str(profile.resolve())}
    with pytest.raises(ValueError, match="dds_profile 'shm'"):
        dds_environment("shm")


def test_launch_sets_the_environment_of_the_node(monkeypatch):
    monkeypatch.delenv(PROFILE, raising=False)
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS", raising=False)
    launch = resolve({})
    assert launch.environment == dds_environment("shm_udp")
    assert launch.node_kwargs()["additional_env"] == launch.environment
    assert launch.process_env({"A": "1"}) == {"A": "1", **launch.environment}
    assert resolve({"dds_profile": "default"}).environment == {}


def test_dds_transport_restores_the_environment(monkeypatch):
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    with dds_transport("large_data") as variables:
        assert os.environ["FASTDDS_BUILTIN_TRANSPORTS"] == "LARGE_DATA" == \
            variables["FASTDDS_BUILTIN_TRANSPORTS"]
    assert os.environ["FASTDDS_BUILTIN_TRANSPORTS"] == "UDPv4"
