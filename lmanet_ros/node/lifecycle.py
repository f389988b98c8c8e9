"""``lmanet_lifecycle_node``: the managed (lifecycle) variant of ``lmanet_node``, driven through
the ROS 2 lifecycle state machine as Nav2's lifecycle manager and other perception stacks do.

It is :class:`~lmanet_ros.node.node.LmanetNode` (the same parameters, loading path, topics,
services and worker), started by the transitions instead of at construction:

- construction: the parameters are declared and validated (a bad value ends the process with
  exit code 1, as for ``lmanet_node``); the node is ``unconfigured``;
- ``configure``: load and warm up the model, create the output publishers (lifecycle
  publishers: they publish only while ``active``), each camera's reset service,
  ``~/reset_memory`` and /diagnostics. A failure (missing or bad checkpoint, absent device)
  logs its one-line reason and returns FAILURE: the node stays ``unconfigured``, alive;
- ``activate``: the input subscriptions and the worker; ~/label_info (latched) is published;
- ``deactivate``: the publishers go quiet first (a frame in flight publishes nothing), then
  the subscriptions are destroyed, the worker ends, frames waiting are dropped (``inactive``);
- ``cleanup``: publishers, services and the diagnostics timer destroyed, the pipeline released
  (its memory freed; the CUDA cache emptied on a GPU) (``unconfigured``);
- ``shutdown`` (from any primary state): as deactivate and cleanup (``finalized``).

/diagnostics, from configure on, carry the state: the model status has ``lifecycle_state`` and
says "not processing" unless active; the camera statuses are published while active only. The
lifecycle services run in a callback group of their own, so parameter and reset services answer
while ``configure`` loads the model. Parameters set while unconfigured take effect at configure;
the read-only ones (model, checkpoint, device, precision) are set at start, as for lmanet_node.
The process around the node (signals, spin thread, bounded shutdown) is
:func:`lmanet_ros.node.process.run`, as for ``lmanet_node``.
"""
from __future__ import annotations

import functools
import gc
import traceback
from typing import TYPE_CHECKING, Any, Callable

from diagnostic_msgs.msg import KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from lmanet_ros.node import process
from lmanet_ros.node.launch_args import NODE_NAME
from lmanet_ros.node.loading import StartupError
from lmanet_ros.node.node import STOP_TIMEOUT_S, LmanetNode

if TYPE_CHECKING:
    from lmanet_ros.pipeline import SegmentationPipeline

__all__ = ["LmanetLifecycleNode", "main"]

Transition = Callable[[Any, LifecycleState], TransitionCallbackReturn]


def _reported(transition: Transition) -> Transition:
    """Log the traceback of a transition callback that raises (rclpy turns the exception into
    ERROR without a word), then let rclpy handle it (:meth:`LmanetLifecycleNode.on_error`)."""
    @functools.wraps(transition)
    def run(node: "LmanetLifecycleNode", state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return transition(node, state)
        except Exception:
            node.get_logger().error(f"{transition.__name__} raised:\n{traceback.format_exc()}")
            raise
    return run


class LmanetLifecycleNode(LifecycleNodeMixin, LmanetNode):
    """LmanetNode as a managed node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        """Declare the parameters; the node is ``unconfigured``.

        Args:
            node_name: the default node name (a ``__node:=`` remap wins).
            kwargs: passed to :class:`rclpy.node.Node` (``context``, ``parameter_overrides``...).

        Raises:
            StartupError: bad parameters (the reason has already been logged, one line).
        """
        LmanetNode.__init__(self, node_name, **kwargs)
        LifecycleNodeMixin.__init__(self, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info("unconfigured: the lifecycle transition configure loads the "
                               "model, activate starts processing")

    @property
    def lifecycle_state(self) -> str:
        """The current state's label: ``unconfigured``, ``inactive``, ``active``..."""
        return self._state_machine.current_state[1]

    def _start(self) -> None:
        """Nothing at construction: the transitions start the node."""

    def _create_output_publisher(self, msg_type: Any, topic: str, qos_profile: Any,
                                 **kwargs: Any) -> Any:
        """A lifecycle publisher; enabled at once when created while active (a
        ``publish.<output>`` parameter turned on)."""
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos_profile, **kwargs)
        if self._taking:
            state_id, label = self._state_machine.current_state
            publisher.on_activate(LifecycleState(label=label, state_id=state_id))
        return publisher

    def destroy_publisher(self, publisher: Any) -> bool:
        """Destroy a publisher; a lifecycle one leaves the managed entities too (there are none
        yet when the node failed to start: its parameters were refused)."""
        getattr(self, "_managed_entities", set()).discard(publisher)
        return super().destroy_publisher(publisher)

    # ------------------------------------------------------------------------------ transitions
    @_reported
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm up the model, create publishers and services; FAILURE (the reason
        logged, everything created undone) when the model cannot be loaded."""
        with self._config_lock:
            try:
                self._load_pipeline()
                self._open()
            except StartupError as exc:
                self.get_logger().error(f"configure failed: {exc}")
                self._close()
                return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured (inactive): activate starts processing")
        return super().on_configure(state)

    @_reported
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, start taking and processing frames; label_info published."""
        result = super().on_activate(state)
        if result == TransitionCallbackReturn.SUCCESS:
            self._start_processing()
        return result

    @_reported
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Silence the publishers, then stop taking frames and end the worker."""
        result = super().on_deactivate(state)
        self._stop_processing()
        self.get_logger().info("deactivated: frames are no longer taken")
        return result

    @_reported
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy publishers and services, release the model."""
        self._close()
        return super().on_cleanup(state)

    @_reported
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any primary state: stop processing and release everything."""
        self._stop_processing()
        self._close()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised (logged by it): release everything, back to ``unconfigured``."""
        self._stop_processing()
        self._close()
        self.get_logger().error(f"transition from {state.label} failed: released everything, "
                                f"unconfigured")
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------------------------- helpers
    def _stop_processing(self) -> None:
        """No input subscriptions, frames waiting dropped, the worker ended (after the frame in
        flight, at most :data:`~lmanet_ros.node.node.STOP_TIMEOUT_S` s)."""
        with self._ports_lock:
            self._taking = False
            for port in self._ports.values():
                port.unsubscribe(self)
        self.stop(timeout=STOP_TIMEOUT_S)
        self._ready_time = None

    def _close(self) -> None:
        """Destroy what configure created and release the pipeline and its memory."""
        with self._config_lock:
            self._join_worker()
            with self._ports_lock:
                for port in self._ports.values():
                    port.close(self)
                self._ports.clear()
            for publisher in (self._label_info_pub, self._vision_label_info_pub,
                              self._diagnostics_pub):
                if publisher is not None:
                    self.destroy_publisher(publisher)
            self._label_info_pub = self._vision_label_info_pub = self._diagnostics_pub = None
            if self._diagnostics_timer is not None:
                self.destroy_timer(self._diagnostics_timer)
                self._diagnostics_timer = None
            if self._reset_service is not None:
                self.destroy_service(self._reset_service)
                self._reset_service = None
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            on_gpu = pipeline.device.type == "cuda"
            del pipeline
            gc.collect()
            if on_gpu:
                import torch
                torch.cuda.empty_cache()
            self.get_logger().info("cleaned up: the model is released")

    def _model_status(self, pipeline: "SegmentationPipeline") -> Any:
        """The model's status with the lifecycle state (``lifecycle_state``)."""
        status = super()._model_status(pipeline)
        state = self.lifecycle_state
        status.values.append(KeyValue(key="lifecycle_state", value=state))
        if not self._taking:
            status.message = f"{state}, not processing: {status.message}"
        return status


def main(args: list[str] | None = None) -> int:
    """Run the managed node until SIGINT/SIGTERM (:func:`lmanet_ros.node.process.run`); exit
    codes: 0 clean (after a signal too), 1 bad parameters, 2 bad ROS arguments."""
    return process.run(LmanetLifecycleNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
