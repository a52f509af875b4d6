"""Resident memory of this process (Linux): resetting the peak mark that
asv's ``peakmem_`` reads, and reading the current and the peak RSS."""
from __future__ import annotations


def reset_peak_rss():
    """Reset the process's peak-RSS mark (Linux ``/proc/self/clear_refs``), so that
    asv's ``peakmem_`` (``ru_maxrss``) counts from the memory in use now; returns
    False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_and_peak():
    """(current RSS, peak RSS) of this process in bytes, from ``/proc/self/status``."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                vals[key] = int(kb) * 1024
    return vals["VmRSS:"], vals["VmHWM:"]
