"""lmanet_node answers while it infers: reset services, parameter services and /diagnostics within
100 ms during a long inference; SIGINT in the middle of an inference exits cleanly (code 0).
The node is started with the launch argument image:=cam0/image_raw (a remap), live defaults."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from ros_helpers import Rig, make_image, stamp_of, wait_until

pytestmark = pytest.mark.ros

#: Large enough that one inference takes well over a second on the 2-core test machine (512x1024
#: took 0.35 s there when the machine was otherwise idle: too short to measure during).
BIG = (1024, 2048)
SMALL = (48, 96)
ANSWER_S = 0.100


@pytest.fixture(scope="module")
def rig(ros, node_factory):
    # reliable input: a best-effort 1.5 MB frame is lost whole if one fragment is
    node = node_factory(params={"diagnostics_period": 0.1, "input.reliability": "reliable"},
                        launch={"image": "cam0/image_raw"})
    rig = Rig(ros, node, outputs=("labels",), input_topic="cam0/image_raw",
              input_qos=QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    assert rig.pub.topic_name == node.input_topic("cam0/image_raw")
    return rig


def image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def model_values(array_msg, fqn: str) -> dict:
    for status in array_msg.status:
        if status.name == f"{fqn}: model":
            return {kv.key: kv.value for kv in status.values}
    return {}


def start_long_inference(rig, stamp: float) -> float:
    """Publish a big frame; return once the node's diagnostics say it is inferring."""
    count = len(rig.diagnostics)
    rig.pub.publish(make_image(image(BIG), stamp=stamp))
    wait_until(lambda: any(model_values(m, rig.node.fqn).get("inferring_for_s")
                           for m in rig.diagnostics.messages[count:]), 60.0,
               what="the node's diagnostics to report an inference in progress")
    return time.monotonic()


def test_remapped_input_topic_is_used(rig):
    out = rig.send(make_image(image(SMALL), stamp=1.0))
    assert out["labels"].width == SMALL[1]


def test_diagnostics_name_the_attention_backend_and_normalisation(rig):
    from lmanet_ros.models import _attention_ext
    from lmanet_ros.models.attention import attention_backend

    values = wait_until(lambda: next((v for v in (model_values(m, rig.node.fqn)
                                                  for m in reversed(rig.diagnostics.messages))
                                      if v), None), 30.0, what="a model diagnostics status")
    assert values["attention"] == attention_backend()   # fp32 lmanet_erfnet on the CPU
    if _attention_ext.load()[0] and os.environ.get("LMANET_ATTENTION", "auto") == "auto":
        # the set-up builds the kernel: the node must take it
        assert values["attention"].startswith("compiled (")
    assert values["normalisation"] == "none (RGB in [0, 1])"


def test_services_and_diagnostics_answer_during_inference(rig):
    ros, fqn = rig.ros, rig.node.fqn
    calls = {  # clients made (and matched) before the inference starts
        "reset_memory": (ros.client(Trigger, rig.node.topic("reset_memory")), Trigger.Request()),
        "get_parameters": (ros.client(GetParameters, f"{fqn}/get_parameters"),
                           GetParameters.Request(names=["overlay_alpha", "memory.max_gap"])),
        "set_parameters": (ros.client(SetParameters, f"{fqn}/set_parameters"),
                           SetParameters.Request(parameters=[
                               Parameter("overlay_alpha", value=0.4).to_parameter_msg()])),
    }
    try:
        for client, request in calls.values():  # first calls complete the matching
            ros.call_with(client, request)
        rig.send(make_image(image(SMALL), stamp=2.0))  # the node is idle and warm
        started = start_long_inference(rig, stamp=3.0)
        diagnostics_before = len(rig.diagnostics)
        timings = {name: [] for name in calls}
        for _ in range(3):
            for name, (client, request) in calls.items():
                response, seconds = ros.call_with(client, request)
                timings[name].append(seconds)
        time.sleep(0.5)
        diagnostics_during = len(rig.diagnostics) - diagnostics_before
        still_inferring = not any(stamp_of(m) == 3.0 for m in rig.outputs["labels"].messages)
        big = rig.outputs["labels"].wait_for(1, 120.0, lambda m: stamp_of(m) == 3.0)[0]
        elapsed = time.monotonic() - started
    finally:
        for client, _ in calls.values():
            ros.node.destroy_client(client)
    assert big.width == BIG[1]
    assert still_inferring, (f"the big frame finished before the calls were made "
                             f"({elapsed:.2f} s): the test did not measure during inference")
    print({name: [round(t * 1e3, 1) for t in values] for name, values in timings.items()})
    slow = {name: max(values) for name, values in timings.items() if max(values) > ANSWER_S}
    # round trips measured at the client (DDS both ways included); every call within 100 ms
    assert not slow, f"answers slower than {ANSWER_S * 1e3:.0f} ms during inference: {slow}"
    assert diagnostics_during >= 3, f"only {diagnostics_during} /diagnostics in 0.5 s"


def test_sigint_during_inference_exits_cleanly(rig):
    rig.send(make_image(image(SMALL), stamp=10.0))
    start_long_inference(rig, stamp=11.0)
    assert not any(stamp_of(m) == 11.0 for m in rig.outputs["labels"].messages)
    start = time.monotonic()
    code = rig.node.interrupt()
    rig.node.expected_exit = True
    assert code == 0, rig.node.log()[-2000:]
    log = rig.node.log()
    assert "Traceback" not in log, log[-3000:]
    wait_until(lambda: True, 0.1)
    print(f"exited {time.monotonic() - start:.2f} s after SIGINT")
