"""Helpers shared by the Python benchmarks (run as `python bench/<name>.py`, so this folder is on sys.path)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model, for the `device` field of CPU-only results (BENCH.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
