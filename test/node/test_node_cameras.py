"""lmanet_node over real DDS with two cameras (launch argument cameras:=front,rear): topics per
camera, one memory each (reset services per camera and for all), diagnostics per camera, frames
of both cameras batched into one inference."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from std_srvs.srv import Trigger

from ros_helpers import Rig, make_image, resets, stamp_of

pytestmark = pytest.mark.ros

CAMERAS = ("front", "rear")
IMAGE = {
    "front": np.random.default_rng(1).integers(0, 256, (48, 96, 3), dtype=np.uint8),
    "rear": np.random.default_rng(2).integers(0, 256, (48, 96, 3), dtype=np.uint8),
}
_ticks = itertools.count(1)


@pytest.fixture(scope="module")
def rigs(ros, node_factory):
    node = node_factory(params={"diagnostics_period": 0.2},
                        launch={"cameras": ",".join(CAMERAS)})
    return {camera: Rig(ros, node, outputs=("labels", "overlay"), camera=camera)
            for camera in CAMERAS}


def frame(camera: str, stamp: float | None = None):
    stamp = stamp if stamp is not None else 50.0 + next(_ticks) * 0.05
    return make_image(IMAGE[camera], stamp=stamp, frame_id=f"{camera}_optical")


def test_each_camera_has_its_topics_and_outputs(rigs):
    for camera, rig in rigs.items():
        out = rig.send(frame(camera))
        for msg in out.values():
            assert msg.header.frame_id == f"{camera}_optical"
            assert (msg.height, msg.width) == (48, 96)
        assert rig.node.topic(f"{camera}/labels").endswith(f"/lmanet/{camera}/labels")
    # nothing crossed over: front's outputs carry only front's frame ids
    assert all(m.header.frame_id == "front_optical"
               for m in rigs["front"].outputs["labels"].messages)


def test_per_camera_diagnostics(rigs):
    for camera, rig in rigs.items():
        rig.send(frame(camera), outputs=("labels",))
        status, values = rig.status(lambda v: int(v["frames_processed"]) >= 1)
        assert values["topic"] == rig.node.input_topic(f"{camera}/image")


def _fill(rigs, frames: int = 5):
    for _ in range(frames):
        for camera, rig in rigs.items():
            rig.send(frame(camera), outputs=("labels",))


def test_frames_of_both_cameras_are_batched(rigs):
    _fill(rigs)  # equal memory fill on both cameras: they can share one inference
    front, rear = rigs["front"], rigs["rear"]
    for _attempt in range(10):
        # keep the worker busy with one front frame, then give both cameras a frame at once
        busy = frame("front")
        front.pub.publish(busy)
        stamp = 50.0 + next(_ticks) * 0.05
        pair = {camera: frame(camera, stamp) for camera in CAMERAS}
        for camera in CAMERAS:
            rigs[camera].pub.publish(pair[camera])
        for camera in CAMERAS:
            rigs[camera].outputs["labels"].wait_for(
                1, 30.0, lambda m: stamp_of(m) == stamp)
        values = front.status(lambda v: True)[1]
        if int(values["frames_batched"]) > 0:
            break
        time.sleep(0.3)
    status, values = front.status(lambda v: int(v["frames_batched"]) > 0)
    assert int(rear.status(lambda v: int(v["frames_batched"]) > 0)[1]["frames_batched"]) > 0


def test_camera_reset_service_resets_only_that_camera(rigs):
    _fill(rigs, 1)
    front_before = rigs["front"].status()[1]
    rear_before = rigs["rear"].status()[1]
    response, seconds = rigs["front"].ros.call(Trigger, rigs["front"].node.topic(
        "front/reset_memory"))
    assert response.success and "front" in response.message
    rigs["front"].node.wait_log("~/front/reset_memory: memory reset requested for camera "
                                "'front'; applied before the next frame")  # before any frame
    _fill(rigs, 2)
    front_after = rigs["front"].status(
        lambda v: resets(v, "request") > resets(front_before, "request"))[1]
    rear_after = rigs["rear"].status(
        lambda v: int(v["frames_processed"]) >= int(rear_before["frames_processed"]) + 2)[1]
    assert resets(front_after, "request") == resets(front_before, "request") + 1
    assert resets(rear_after, "request") == resets(rear_before, "request")


def test_node_reset_service_resets_every_camera(rigs):
    _fill(rigs, 1)
    before = {camera: rig.status()[1] for camera, rig in rigs.items()}
    response, _ = rigs["front"].ros.call(Trigger, rigs["front"].node.topic("reset_memory"))
    assert response.success and "front" in response.message and "rear" in response.message
    _fill(rigs, 1)
    for camera, rig in rigs.items():
        rig.status(lambda v, c=camera: resets(v, "request") == resets(before[c], "request") + 1)
