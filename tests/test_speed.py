"""Step-speed options: SGD implementations, torch.compile of the Siamese module, device metrics."""

from __future__ import annotations

import pytest
import torch

from engine.config import resolve
from engine.reporting import Reporter
from engine.speed import DeviceMetrics, compile_module, sgd_kwargs
from engine.train import SiameseModule, build_backbone, train
from tests.conftest import MICRO_OVERRIDES


class _Losses(Reporter):
    def __init__(self) -> None:
        self.points: list[dict] = []

    def metrics(self, step, values):
        self.points.append(dict(values))


def test_sgd_implementations_train_alike(tmp_path):
    assert sgd_kwargs("auto", torch.device("cpu")) == {} and sgd_kwargs("auto", torch.device("cuda")) == {"fused": True}
    runs = {}
    for impl in ("for_loop", "foreach", "fused"):
        rec = _Losses()
        result = train(resolve("tiny", MICRO_OVERRIDES + ["schedule.max_steps=3", f"optim.sgd={impl}"]),
                       tmp_path / impl, rec)
        runs[impl] = ([p["loss"] for p in rec.points], result.backbone.state_dict())
    ref_losses, ref_weights = runs["for_loop"]
    for impl in ("foreach", "fused"):
        losses, weights = runs[impl]
        assert losses == pytest.approx(ref_losses, rel=1e-5)
        assert all(torch.allclose(weights[k].float(), ref_weights[k].float(), atol=1e-5) for k in weights)
    assert not any(k.startswith("gpu_") for p in rec.points for k in p)  # nothing reported on a CPU
    assert DeviceMetrics(torch.device("cpu")).read() == {}


def test_compiled_module_computes_the_same_losses():
    from engine.losses import build_distance_loss, build_head

    cfg = resolve("tiny", MICRO_OVERRIDES)
    torch.manual_seed(0)
    module = SiameseModule(build_backbone(cfg), build_head("cosface", cfg.model.embedding_size, 12, s=48.0, m=0.4),
                           build_distance_loss("logexp", p=1.0), 1.0).eval()
    x_hr, x_lr = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3])
    compiled = compile_module(module, backend="eager")  # the graph capture; inductor is exercised on the GPU
    expected = module(x_hr, x_lr, labels)
    got = compiled(x_hr, x_lr, labels)
    assert all(torch.allclose(a, b) for a, b in zip(expected, got, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_memory_is_reported_on_cuda(tmp_path):
    rec = _Losses()
    train(resolve("tiny", MICRO_OVERRIDES + ["schedule.max_steps=2", "train.device=cuda"]), tmp_path, rec)
    assert all(p["gpu_mem_gib"] > 0 for p in rec.points)
