"""Lock-step over real DDS: 3,000 small frames, each published after the previous one's labels
arrived; every frame must be labelled (a frame lost once in 3,000 was reported). Slow."""
from __future__ import annotations

import numpy as np
import pytest

from ros_helpers import Rig, make_image

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = 3000


def test_lock_step_labels_every_frame(ros, node_factory):
    node = node_factory(params={"diagnostics_period": 0.5})
    rig = Rig(ros, node, outputs=("labels",))
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    missing = []
    for index in range(FRAMES):
        msg = make_image(rgb, stamp=1.0 + index * 0.05)
        try:
            rig.send(msg, timeout=5.0)
        except AssertionError:
            missing.append(index)
        if len(rig.outputs["labels"].messages) > 100:
            rig.outputs["labels"].clear()
    _, values = rig.status()
    assert not missing, f"frames never labelled: {missing}; diagnostics {values}; log tail " \
                        f"{node.log()[-2000:]}"
