"""The ``lmanet_node`` process: any number of SIGINT/SIGTERM, at any moment, end it with exit
code 0 within :data:`EXIT_DEADLINE_S` seconds, without a traceback.

The design: signal handlers only record, the main thread only waits, the work runs in threads
that no signal interrupts.

- :func:`install_signal_handlers` (the console script calls it before rclpy and torch are
  imported) routes SIGINT and SIGTERM to one :class:`ShutdownRequest`. Its handler records the
  first signal, makes the OS ignore every later SIGINT/SIGTERM (Ctrl-C under ``ros2 launch``
  delivers two: the terminal's and launch's), and arms a deadline: if the process still runs
  :data:`EXIT_DEADLINE_S` seconds after the first signal, it leaves with code 0. The handler
  never raises into running code: a KeyboardInterrupt inside a pybind11 call aborts the process
  ("terminate called ..."), inside ``destroy_node`` it leaves a traceback.
- :func:`run` first checks the ROS arguments (:func:`lmanet_ros.node.ros_args.check`): a
  malformed one, a missing or broken parameter file ends the process with exit code 2 and one
  line on stderr that names it, before rcl sees it (rcl would print a line of its own, then its
  lexer's words); what rcl still refuses gives one line too (its own log line is dropped). It
  then initialises rclpy without rclpy's own handlers (they would raise
  KeyboardInterrupt and shut the context down under the node), builds and spins the node in the
  thread ``lmanet-ros`` and waits for a signal or for that thread to end. After a signal, a node
  still starting (model load, warm-up: torch cannot be interrupted) gets
  :data:`START_GRACE_S` seconds to finish, else it is left behind; a running node stops its
  worker (the frame in flight gets what remains of the deadline), its executor, is destroyed,
  and the context shut down. Work still in native code after that (a long inference) is not
  waited for: the process leaves with :func:`leave` instead of finalising the interpreter under it.

Nothing here imports rclpy or torch at module level.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from lmanet_ros.node.node import LmanetNode

__all__ = ["EXIT_DEADLINE_S", "START_GRACE_S", "USAGE_ERROR", "ShutdownRequest",
           "install_signal_handlers", "leave", "program", "run"]

#: Seconds from the first SIGINT/SIGTERM to the end of the process, at most.
EXIT_DEADLINE_S = 3.5
#: Seconds a node that is still starting gets, after a signal, to finish starting.
START_GRACE_S = 0.5
#: Seconds of the deadline kept for destroying the node and shutting ROS down.
TEARDOWN_S = 1.5
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Exit code of a malformed command line (ROS arguments, parameter file).
USAGE_ERROR = 2
#: Where in rcl's C sources an error was raised (", at /path/arguments.c:352"), cut from it.
_C_SOURCE = re.compile(r",? at [^,]*\.c:\d+")

_request: ShutdownRequest | None = None


def leave(code: int) -> None:
    """End the process now with ``code``, output flushed, without finalising the interpreter
    (threads still in native code, such as an inference, are not waited for)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to say
            pass
    os._exit(code)


class ShutdownRequest:
    """The first SIGINT or SIGTERM of the process, recorded without taking any Python lock (a
    handler runs between two bytecodes of the main thread, which may hold any lock)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.received_at: float | None = None
        self._armed = threading.Lock()  # held until the first signal
        self._armed.acquire()
        threading.Thread(target=self._deadline, name="lmanet-exit-deadline", daemon=True).start()

    @property
    def requested(self) -> bool:
        """Whether a signal came."""
        return self.received_at is not None

    def remaining(self) -> float:
        """Seconds left until the deadline (the whole deadline before any signal)."""
        if self.received_at is None:
            return EXIT_DEADLINE_S
        return max(0.0, EXIT_DEADLINE_S - (time.monotonic() - self.received_at))

    def handle(self, signum: int, frame: Any) -> None:
        """The SIGINT/SIGTERM handler: record, ignore the next ones, arm the deadline."""
        for other in SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        self.received_at = time.monotonic()
        self.signal_name = signal.Signals(signum).name
        self._armed.release()

    def _deadline(self) -> None:
        """Leave with code 0 :data:`EXIT_DEADLINE_S` seconds after the first signal."""
        self._armed.acquire()
        time.sleep(EXIT_DEADLINE_S)
        leave(0)


def install_signal_handlers() -> ShutdownRequest | None:
    """Route SIGINT and SIGTERM to the process's :class:`ShutdownRequest` (once).

    Returns:
        the request; None when called off the main thread (the embedding program keeps its
        handlers and stops the node itself).
    """
    global _request
    if threading.current_thread() is not threading.main_thread():
        return None
    if _request is None:
        _request = ShutdownRequest()
        for signum in SIGNALS:
            signal.signal(signum, _request.handle)
    return _request


class _NodeThread(threading.Thread):
    """Builds the node and spins it in an executor; the main thread stops it."""

    def __init__(self, build: Callable[[], "LmanetNode"]) -> None:
        super().__init__(name="lmanet-ros", daemon=True)
        self._build = build
        self._lock = threading.Lock()
        self._stopping = False
        self.node: LmanetNode | None = None
        self.executor: Any = None
        self.code = 0

    def run(self) -> None:
        """Build the node; unless a stop came meanwhile, spin it until the executor shuts down."""
        from rclpy.executors import MultiThreadedExecutor

        from lmanet_ros.node.loading import StartupError
        from lmanet_ros.ros_env import spin
        try:
            node = self._build()
            with self._lock:
                self.node = node
                if self._stopping:
                    return
                self.executor = MultiThreadedExecutor(num_threads=node.executor_threads)
                self.executor.add_node(node)
            spin(self.executor)  # through rclpy's stale-handle race (ros_env.spin)
        except StartupError:
            self.code = 1  # the node logged the reason, one line
        except Exception:
            if not self._stopping:  # not the stop's doing: a bug, whose traceback is wanted
                self.code = 1
                raise

    def stop(self, request: ShutdownRequest | None) -> int:
        """Stop the node within the deadline; the exit code (or the process leaves)."""
        import rclpy.logging

        from lmanet_ros.node.launch_args import NODE_NAME
        from lmanet_ros.ros_env import teardown
        with self._lock:
            self._stopping = True
            node, executor = self.node, self.executor
        if request is not None and request.requested:
            logger = node.get_logger() if node is not None else rclpy.logging.get_logger(NODE_NAME)
            logger.info(f"{request.signal_name}: shutting down")
        if node is None and self.is_alive():  # still loading or warming up the model
            self.join(START_GRACE_S)
            with self._lock:
                node = self.node
            if node is None:
                leave(0)
        remaining = request.remaining() if request is not None else EXIT_DEADLINE_S
        if node is not None:
            node.stop(timeout=max(0.0, remaining - TEARDOWN_S))
        teardown([node], executor=executor)
        self.join(1.0)
        if self.is_alive() or (node is not None and node.worker_alive()):
            leave(self.code)  # an inference outlived the stop: do not finalise under it
        return self.code


def program() -> str:
    """The executable's name for messages: ``lmanet_node`` or ``lmanet_lifecycle_node``."""
    from lmanet_ros.node.launch_args import EXECUTABLE, LIFECYCLE_EXECUTABLE
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name in (EXECUTABLE, LIFECYCLE_EXECUTABLE) else EXECUTABLE


@contextmanager
def _stderr_held() -> Iterator[None]:
    """Hold what is written to file descriptor 2 (rcl's C logging) while the block runs: written
    out after it when it succeeds, dropped when it raises (rcl logs a line of its own before the
    error that :func:`run` reports in one line)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr: nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            held.seek(0)
            output = held.read()
            while output:
                output = output[os.write(2, output):]
        finally:
            os.close(saved)


def _init_failure(exc: BaseException) -> str:
    """Why ``rclpy.init`` failed, in one line without rcl's C source locations."""
    from lmanet_ros.node.loading import one_line
    if type(exc).__name__ == "UnknownROSArgsError":
        return (f"unknown ROS arguments {one_line(exc).strip('[]')} (`{program()} --help` "
                f"lists them)")
    return _C_SOURCE.sub("", one_line(exc)).removeprefix("failed to initialize rcl: ")


def run(build: Callable[[], "LmanetNode"], args: list[str] | None = None) -> int:
    """Run the node ``build()`` makes until SIGINT/SIGTERM or the end of ROS (see the module
    docstring); returns the exit code: 0 clean (after a signal too), 1 start-up failure,
    :data:`USAGE_ERROR` bad ROS arguments (one line on stderr).

    Args:
        build: makes the node (in the thread that spins it).
        args: the command line, program name first (default ``sys.argv``).
    """
    from lmanet_ros.node.ros_args import RosArgumentError, check
    try:
        check(sys.argv if args is None else args)
    except RosArgumentError as exc:
        print(f"{program()}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    request = install_signal_handlers()
    if request is not None and request.requested:
        return 0  # a signal during the imports: nothing was started
    try:
        with _stderr_held():
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # what rcl refuses beyond ros_args.check
        print(f"{program()}: cannot initialise ROS: {_init_failure(exc)}", file=sys.stderr)
        return USAGE_ERROR
    thread = _NodeThread(build)
    thread.start()
    while thread.is_alive() and not (request is not None and request.requested):
        thread.join(0.05)
    return thread.stop(request)
