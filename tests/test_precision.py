"""Training precision (``train.amp``) and what the main job keeps out of memory.

``auto`` trains in bf16 on CUDA and on CPUs with bf16 instructions, in fp32 on other CPUs; a run's events
say which. The CPU's uint8 resize is torch's own kernel, checked here against torchvision's ``resize``
(which calls the same kernel), so training never imports torchvision (165 MB resident).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from engine import speed
from engine import train as train_module
from engine.augment import degrade
from engine.config import resolve
from engine.reporting import Reporter
from engine.train import amp_dtype, train
from tests.conftest import MICRO_OVERRIDES

FLAGS = "fpu vme sse sse2 avx2 avx512f avx512bw"


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert not speed.native_cpu_bf16(_cpuinfo(tmp_path, FLAGS))
    expected = torch.backends.mkldnn.is_available()
    assert speed.native_cpu_bf16(_cpuinfo(tmp_path, FLAGS + " avx512_bf16")) is expected
    assert speed.native_cpu_bf16(_cpuinfo(tmp_path, FLAGS + " amx_tile amx_bf16")) is expected
    assert not speed.native_cpu_bf16(str(tmp_path / "missing"))


def test_auto_precision_follows_the_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # The probe stands in for two kinds of CPU; the rule under test is amp_dtype's.
    monkeypatch.setattr(train_module, "native_cpu_bf16", lambda: True)
    assert amp_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(train_module, "native_cpu_bf16", lambda: False)
    assert amp_dtype("auto", cpu) is None
    assert amp_dtype("auto", cuda) is torch.bfloat16
    assert amp_dtype("off", cuda) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    assert amp_dtype("fp16", cuda) is torch.float16


class _Events(Reporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.losses: list[float] = []

    def event(self, kind, message, **fields):
        self.events.append((kind, fields))

    def metrics(self, step, values):
        self.losses.append(values["loss"])


@pytest.mark.parametrize(("setting", "dtype"), [("off", "float32"), ("bf16", "bfloat16")])
def test_a_run_says_its_precision_and_trains_in_it(tmp_path, setting, dtype):
    reporter = _Events()
    train(resolve("tiny", MICRO_OVERRIDES + ["schedule.max_steps=4", f"train.amp={setting}"]), tmp_path, reporter)
    said = [fields for kind, fields in reporter.events if kind == "precision"]
    assert said == [{"dtype": dtype, "setting": setting}]
    assert len(reporter.losses) == 4 and all(torch.isfinite(torch.tensor(reporter.losses)))


def test_bf16_and_fp32_training_start_from_the_same_losses(tmp_path):
    """bf16 autocast changes the numbers only by bf16's rounding: the first step's loss agrees to 1 %."""
    first = {}
    for setting in ("off", "bf16"):
        reporter = _Events()
        train(resolve("tiny", MICRO_OVERRIDES + ["schedule.max_steps=1", f"train.amp={setting}"]),
              tmp_path / setting, reporter)
        first[setting] = reporter.losses[0]
    assert first["bf16"] == pytest.approx(first["off"], rel=0.01)
    assert first["bf16"] != first["off"]  # it did run in bf16


@pytest.mark.parametrize("r", [7, 14, 20, 56])
def test_uint8_degradation_is_torchvisions_resize(r):
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    g = torch.Generator().manual_seed(r)
    faces = torch.randint(0, 256, (6, 3, 112, 112), dtype=torch.uint8, generator=g)
    down = TF.resize(faces, [r, r], interpolation=InterpolationMode.BICUBIC, antialias=True)
    reference = TF.resize(down, [112, 112], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(degrade(faces, r), reference)


def test_training_and_evaluation_do_not_import_torchvision():
    code = ("import sys, engine.train, engine.evaluate, engine.evaluate.benchmarks, engine.augment; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
