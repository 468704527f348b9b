"""Step-speed options of the trainer and what it reports about the device.

* ``build_sgd``: SGD by ``optim.sgd`` - fused (one kernel for every parameter) on CUDA by default, torch's
  own choice elsewhere (on the CPU: the per-parameter loop, as before this option existed).
* ``compile_module``: ``torch.compile`` of the Siamese module (``train.compile``, off by default: the
  compile time pays off only over long runs, and its gain depends on the GPU and model; measure first with
  ``benchmarks/gpu_check.sh``).
* ``native_cpu_bf16``: whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16), which is
  where ``train.amp = "auto"`` trains in bf16 on the CPU too (elsewhere oneDNN would emulate it, slower
  than fp32).
* ``DeviceMetrics``: ``gpu_mem_gib`` (peak memory allocated by tensors since the previous log step) and,
  when NVML is importable (the ``nvidia-ml-py`` package), ``gpu_util`` (percent of time a kernel ran, as
  ``nvidia-smi`` shows it). Both are host-side reads: neither waits for the GPU, so the step stays free of
  host synchronisation (losses too are summed on the device and read only at log steps).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

import torch
from torch import nn

from engine.config import OptimConfig

GIB = float(1 << 30)


_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_cpu_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has bf16 instructions and torch's oneDNN backend can use them.

    Measured on a 2-core AVX512-BF16 machine with the tiny preset (width-16 IResNet-18, batch 64, 112 px,
    channels-last): bf16 autocast 0.91 s per step and 1.84 GB peak, fp32 1.31 s and 2.72 GB.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_FLAGS)
    except OSError:
        pass
    return False


def sgd_kwargs(setting: str, device: torch.device) -> dict[str, bool]:
    """The ``torch.optim.SGD`` implementation flags for ``optim.sgd``."""
    if setting == "auto":
        return {"fused": True} if device.type == "cuda" else {}
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[setting]


def build_sgd(params: Iterable[nn.Parameter], optim: OptimConfig, device: torch.device) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                           **sgd_kwargs(optim.sgd, device))


def compile_module(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile(module)``. The original module keeps the weights (checkpoints save it, not this)."""
    return torch.compile(module, backend=backend)


def nvml_available() -> bool:
    return importlib.util.find_spec("pynvml") is not None


class DeviceMetrics:
    """The device's memory and utilisation, read at log steps (nothing on a CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.nvml = self.cuda and nvml_available()

    def read(self) -> dict[str, float]:
        if not self.cuda:
            return {}
        out = {"gpu_mem_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
               "gpu_mem_reserved_gib": torch.cuda.memory_reserved(self.device) / GIB}
        torch.cuda.reset_peak_memory_stats(self.device)
        if self.nvml:
            try:  # torch maps the CUDA index to NVML's (CUDA_VISIBLE_DEVICES included)
                out["gpu_util"] = float(torch.cuda.utilization(self.device))
            except Exception:  # an NVML without this GPU, or a driver mismatch: report what we have
                self.nvml = False
        return out
