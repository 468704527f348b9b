"""Distance losses against the released code, ``loss.beta``, and the Table 4 presets.

References:

* hurricanelx/LRFR ``src/metrics.py``, ``ExpDist`` (the released LogExp): ``B, D = x1.shape;
  log(sum(exp(|x1 - x2|^p) - 1) + 1) / p``, then ``/ B`` -- one log over the whole batch. The
  released ``train_webface_pair.py`` wraps the model in ``nn.DataParallel``, so that batch is the
  whole global batch of 256. ``_released_expdist`` below transcribes it; the DDP test runs our loss
  on 2 real gloo processes and compares with it on the concatenated batch.
* ``torch.nn.functional.smooth_l1_loss`` for ``smoothl1``.
* ``/work/shared/PAPER_TABLES.md`` (the paper's Table 4 as printed) for the preset descriptions.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from engine.ablations import TABLE4
from engine.config import flatten, list_presets, resolve
from engine.errors import ConfigError
from engine.losses import SMOOTH_L1_BETA, build_distance_loss, l2_loss, logexp_loss, smooth_l1_loss


@pytest.fixture(autouse=True)
def _leave_global_rng_alone():
    """These tests seed torch's global RNG; restore it so later test files draw what they did before."""
    with torch.random.fork_rng(devices=[]):
        yield


def _released_expdist(x1: torch.Tensor, x2: torch.Tensor, p: float) -> torch.Tensor:
    """hurricanelx/LRFR src/metrics.py ExpDist(p, mean=True).forward, transcribed."""
    B, D = x1.shape
    diff_x = torch.abs(x1 - x2) ** p
    exp_diff = torch.exp(diff_x) - torch.ones(B, D, dtype=x1.dtype)
    loss = torch.log(torch.sum(exp_diff) + torch.ones(1, dtype=x1.dtype)) / p
    return loss / B


# ----------------------------------------------------------------------------------------------
# LogExp batch form under DDP == the released whole-batch loss
# ----------------------------------------------------------------------------------------------

DIM_IN, DIM_EMB = 12, 16
# (p, rows per rank, input scale, normalise): the paper's unit embeddings with p = 1 and 2, unequal
# shards, and raw embeddings large enough that |d|^2 > 20 (the overflow-safe branch).
CASES = [(1.0, (4, 4), 1.0, True), (2.0, (3, 5), 1.0, True), (2.0, (4, 4), 8.0, False)]


class _Siamese(nn.Module):
    """One forward for both branches, as the trainer's SiameseModule (DDP needs one per backward)."""

    def __init__(self, p: float, normalise: bool) -> None:
        super().__init__()
        self.net = nn.Linear(DIM_IN, DIM_EMB)
        self.p, self.normalise = p, normalise

    def forward(self, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        f_hr, f_lr = self.net(hr), self.net(lr)
        if self.normalise:
            f_hr, f_lr = F.normalize(f_hr, dim=1), F.normalize(f_lr, dim=1)
        return logexp_loss(f_hr, f_lr, p=self.p, reduction="batch")


def _case_data(i: int, rows: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(100 + i)
    hr = torch.randn(rows, DIM_IN, generator=g) * scale
    lr = hr + 0.5 * torch.randn(rows, DIM_IN, generator=g) * scale
    torch.manual_seed(7 + i)
    state = nn.Linear(DIM_IN, DIM_EMB).state_dict()
    return hr, lr, state


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for i, (p, shards, scale, normalise) in enumerate(CASES):
            hr, lr, state = _case_data(i, sum(shards), scale)
            module = _Siamese(p, normalise)
            module.net.load_state_dict(state)
            ddp = DDP(module)
            start = sum(shards[:rank])
            part = slice(start, start + shards[rank])
            loss = ddp(hr[part], lr[part])
            loss.backward()  # DDP averages the parameter gradients over the ranks
            results.append({"loss": loss.detach().clone(),
                            "grads": {n: q.grad.clone() for n, q in module.net.named_parameters()}})
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_batch_logexp_on_two_ranks_equals_the_released_whole_batch_loss(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for i, (p, shards, scale, normalise) in enumerate(CASES):
        hr, lr, state = _case_data(i, sum(shards), scale)
        net = nn.Linear(DIM_IN, DIM_EMB).double()
        net.load_state_dict({k: v.double() for k, v in state.items()})
        f_hr, f_lr = net(hr.double()), net(lr.double())
        if normalise:
            f_hr, f_lr = F.normalize(f_hr, dim=1), F.normalize(f_lr, dim=1)
        expected = _released_expdist(f_hr, f_lr, p).squeeze()
        expected.backward()
        if not normalise:
            assert (f_hr - f_lr).abs().max().item() ** p > 20  # really the large-exponent branch
        for rank, results in enumerate(ranks):
            got = results[i]
            assert got["loss"].item() == pytest.approx(expected.item(), rel=1e-5), (i, rank)
            for name, param in net.named_parameters():
                torch.testing.assert_close(got["grads"][name].double(), param.grad, rtol=1e-4, atol=1e-7,
                                           msg=f"case {i} rank {rank} {name}")


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_batch_logexp_without_process_group_is_the_released_loss(p):
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(6, 32, generator=g), dim=1).requires_grad_()
    y = F.normalize(torch.randn(6, 32, generator=g), dim=1)
    got = logexp_loss(x, y, p=p, reduction="batch")
    (g_got,) = torch.autograd.grad(got, x)
    xr = x.detach().clone().requires_grad_()
    expected = _released_expdist(xr, y, p).squeeze()
    (g_exp,) = torch.autograd.grad(expected, xr)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(g_got, g_exp, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# smoothl1 and loss.beta
# ----------------------------------------------------------------------------------------------


def _unit_pairs(n: int = 64, dim: int = 512, cos: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """HR/LR-like unit embeddings with cosine similarity about ``cos``."""
    g = torch.Generator().manual_seed(11)
    x = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    noise = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    y = F.normalize(cos * x + math.sqrt(1 - cos * cos) * noise, dim=1)
    return x, y


def test_configured_smoothl1_differs_from_l2_on_unit_embeddings():
    x, y = _unit_pairs()
    assert (x - y).abs().max() < 1  # why torch's beta = 1 is no Huber loss here
    # beta = 1 (torch's default) is exactly the L2 loss on unit vectors ...
    torch.testing.assert_close(smooth_l1_loss(x, y, beta=1.0), l2_loss(x, y))
    # ... the default beta is not, and is torch's smooth L1 with that beta.
    fn = build_distance_loss("smoothl1")
    got = fn(x, y)
    assert abs(got.item() - l2_loss(x, y).item()) > 0.1 * l2_loss(x, y).item()
    torch.testing.assert_close(got, F.smooth_l1_loss(x, y, beta=SMOOTH_L1_BETA))
    # Some coordinates on either side of the threshold: a real Huber loss.
    d = (x - y).abs()
    assert (d < SMOOTH_L1_BETA).float().mean() > 0.1 and (d > SMOOTH_L1_BETA).float().mean() > 0.1
    torch.testing.assert_close(build_distance_loss("smoothl1", beta=0.05)(x, y), F.smooth_l1_loss(x, y, beta=0.05))


def test_loss_beta_config_key():
    cfg = resolve("tiny")
    assert cfg.loss.beta == SMOOTH_L1_BETA
    assert resolve("tiny", ["loss.distance=smoothl1", "loss.beta=0.05"]).loss.beta == 0.05
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match="loss.beta"):
            resolve("tiny", [f"loss.beta={bad}"])
    with pytest.raises(ConfigError, match="beta"):
        build_distance_loss("smoothl1", beta=0.0)


# ----------------------------------------------------------------------------------------------
# Table 4 presets name rows that exist
# ----------------------------------------------------------------------------------------------

_TABLES = [Path("/work/shared/PAPER_TABLES.md"),
           Path(__file__).resolve().parents[1] / "lrfr_tui" / "data" / "paper_tables.md"]


def _table4_rows() -> list[str]:
    path = next((p for p in _TABLES if p.is_file()), None)
    if path is None:
        pytest.skip("no PAPER_TABLES.md")
    text = path.read_text()
    section = re.search(r"^## Table 4\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"no Table 4 in {path}"
    rows = []
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("configuration", "") and not set(cells[0]) <= set("-: "):
            rows.append(cells[0])
    return rows


def _table4_label(description: str) -> str | None:
    match = re.match(r"Table 4 (.+?):", description)
    return match.group(1) if match else None


def test_table4_presets_name_rows_of_the_papers_table4():
    rows = _table4_rows()
    assert "Baseline" in rows and "MAug + Ours(1)" in rows
    described = {name: desc for name, desc in list_presets().items() if "Table 4" in desc}
    assert described
    for name, desc in described.items():
        label = _table4_label(desc)
        assert label in rows, f"preset {name}: {desc!r} names no Table 4 row (rows: {rows})"


def test_every_table4_grid_row_is_a_preset():
    presets = list_presets()
    by_label = {_table4_label(d): n for n, d in presets.items() if _table4_label(d)}
    assert sorted(by_label) == sorted(row.label for row in TABLE4)
    skip = ("name", "preset", "description")
    for row in TABLE4:
        grid = {k: v for k, v in flatten(resolve("r34", list(row.overrides))).items() if k not in skip}
        preset = {k: v for k, v in flatten(resolve(by_label[row.label])).items() if k not in skip}
        assert preset == grid, f"{row.label}: preset {by_label[row.label]}"
