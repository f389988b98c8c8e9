"""CPU threads for inference: one rule for the node, ``lmanet eval`` and the benchmarks.

PyTorch's own default is every logical CPU of the machine, which on a busy robot or a shared
host makes latency swing with the load (reported in issue 14: p50 862 ms with PyTorch's
default, 124 ms with one thread, same bag, other jobs running). The default here is the
number of *physical* cores this process may run on (``os.sched_getaffinity``, so ``taskset``,
cgroups' cpusets and container limits count), at most :data:`MAX_DEFAULT_THREADS`:
hyper-threads add little to convolutions and more threads than cores only add contention.
``0`` in every ``num_threads`` setting means this default. An explicit count is bounded by the
logical CPUs this process may run on (:func:`max_cpu_threads`): more threads than CPUs only
contend (issue 17: 256 asked for gave 535 threads and p50 latency 228 -> 1436 ms), so a larger
count is clamped, and :func:`cpu_threads_warning` says so for the log.

No torch import at module level: the node's parameter table reads :data:`MAX_DEFAULT_THREADS`.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MAX_DEFAULT_THREADS", "available_cpus", "physical_cores", "default_cpu_threads",
           "max_cpu_threads", "resolve_cpu_threads", "cpu_threads_warning", "apply_cpu_threads"]

#: The most threads the default gives (more rarely pays off for one camera's network step).
MAX_DEFAULT_THREADS = 4

_TOPOLOGY = Path("/sys/devices/system/cpu")


def available_cpus() -> list[int]:
    """The logical CPUs this process may run on, sorted (all of them where affinity is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def _core_of(cpu: int, topology: Path) -> tuple[str, str] | None:
    """(package, core) of a logical CPU from sysfs, or None when sysfs does not say."""
    try:
        base = topology / f"cpu{cpu}" / "topology"
        return ((base / "physical_package_id").read_text().strip(),
                (base / "core_id").read_text().strip())
    except OSError:
        return None


def physical_cores(cpus: list[int] | None = None, topology: Path = _TOPOLOGY) -> int:
    """Distinct physical cores among ``cpus`` (default: :func:`available_cpus`); hyper-thread
    siblings count once. Where the topology is unknown, every logical CPU counts as a core."""
    cpus = available_cpus() if cpus is None else cpus
    cores = [_core_of(cpu, topology) for cpu in cpus]
    if not cpus or any(core is None for core in cores):
        return max(1, len(cpus))
    return len(set(cores))


def default_cpu_threads() -> int:
    """The default thread count: physical cores available, in 1..:data:`MAX_DEFAULT_THREADS`."""
    return max(1, min(MAX_DEFAULT_THREADS, physical_cores()))


def max_cpu_threads() -> int:
    """The most threads an explicit setting gets: the logical CPUs this process may run on."""
    return max(1, len(available_cpus()))


def resolve_cpu_threads(requested: int) -> int:
    """The thread count in force for a ``num_threads`` setting: ``requested`` when > 0, at most
    :func:`max_cpu_threads`; else :func:`default_cpu_threads`.

    Raises:
        ValueError: a negative count.
    """
    if requested < 0:
        raise ValueError(f"num_threads must be >= 0 (0: the default), got {requested}")
    return min(requested, max_cpu_threads()) if requested > 0 else default_cpu_threads()


def cpu_threads_warning(requested: int) -> str | None:
    """A log line when ``requested`` threads are more than :func:`max_cpu_threads` (the count is
    clamped: :func:`resolve_cpu_threads`), else None."""
    limit = max_cpu_threads()
    if requested <= limit:
        return None
    return (f"num_threads {requested} is more than the {limit} CPU(s) this process may run on "
            f"(its CPU affinity): PyTorch uses {limit} thread(s)")


def apply_cpu_threads(requested: int) -> int:
    """Set PyTorch's intra-op threads by :func:`resolve_cpu_threads`; returns the count set."""
    import torch

    count = resolve_cpu_threads(requested)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
