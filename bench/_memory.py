"""Memory measurements shared by the benchmarks (Linux): current, peak, and a reset of the peak."""

import resource


def peak_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def reset_peak() -> None:
    """Start measuring the peak anew (Linux >= 4.0), so that loading the data does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
