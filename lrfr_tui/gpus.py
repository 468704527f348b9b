"""GPU discovery: which GPUs this machine has and how much of their memory is in use.

Uses ``nvidia-smi`` (NVML underneath) with PCI bus order, the numbering ``CUDA_VISIBLE_DEVICES``
uses under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. A machine without it has no GPUs. The scheduler takes
the discovery function as a parameter, so tests can hand it fake GPUs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_used_mib: int
    memory_total_mib: int
    util_pct: int | None = None  # utilisation now, when nvidia-smi tells (fake GPUs do not)


GpuDiscovery = Callable[[], list[GpuInfo]]


class GpuDiscoveryError(Exception):
    """nvidia-smi is there but failed: GPUs may have vanished or the driver is in trouble."""


def discover_gpus() -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
            env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PATH": "/usr/bin:/bin"},
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        # Not "no GPUs": a GPU box whose driver is in trouble must not start GPU runs on the CPU.
        raise GpuDiscoveryError(f"nvidia-smi failed: {exc}") from None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) in (4, 5) and parts[0].isdigit():
            used = int(parts[2]) if parts[2].isdigit() else 0
            total = int(parts[3]) if parts[3].isdigit() else 0
            util = int(parts[4]) if len(parts) == 5 and parts[4].isdigit() else None
            gpus.append(GpuInfo(int(parts[0]), parts[1], used, total, util))
    return gpus


def fake_gpus(count: int, used_mib: int = 0) -> GpuDiscovery:
    """A discovery function for tests and dry runs: ``count`` idle GPUs."""
    return lambda: [GpuInfo(i, "fake", used_mib, 80_000) for i in range(count)]


def discovery_from_env() -> GpuDiscovery:
    """``LRFR_FAKE_GPUS=N`` pretends N idle GPUs (dry runs, tests of the scheduler on CPU machines)."""
    import os

    fake = os.environ.get("LRFR_FAKE_GPUS")
    if fake is not None and fake.strip().isdigit():
        return fake_gpus(int(fake))
    return discover_gpus
