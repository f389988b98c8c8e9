"""The machine under an evaluation, for reading its latencies: the cores this process may use,
the CPU threads PyTorch used, and the load averages when the run started and ended (a loaded
host slows every frame; ``metrics.json`` section ``host``)."""
from __future__ import annotations

import os

from lmanet_ros.threads import available_cpus, physical_cores

__all__ = ["HostLoad"]


def _load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes), rounded to 0.01."""
    return [round(value, 2) for value in os.getloadavg()]


class HostLoad:
    """Taken when a run starts; :meth:`section` adds the end of the run."""

    def __init__(self) -> None:
        """Record the load averages now (the start of the run)."""
        self.start = _load_average()

    def section(self, torch_threads: int | None) -> dict:
        """The ``host`` section of metrics.json: ``cores_available`` (logical CPUs of this
        process's affinity), ``physical_cores``, ``torch_threads`` (the threads PyTorch used,
        None when the network ran in another process) and ``load_average_start`` /
        ``load_average_end`` ([1, 5, 15] minute averages)."""
        cpus = available_cpus()
        return {"cores_available": len(cpus), "physical_cores": physical_cores(cpus),
                "torch_threads": torch_threads,
                "load_average_start": self.start, "load_average_end": _load_average()}
