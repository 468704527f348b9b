"""Figure 4: the first derivatives of the feature-distance losses, taken from the engine's own code.

For one sample of D coordinates with differences d_j = x_j - y_j, the plot shows dL/dx_i against d_i for
d_i in [-2, 2]. L1 and L2 depend on d_i alone. LogExp (Eq. 4)

    dL/dx_i = 1/(p D) * p |d_i|^(p-1) sign(d_i) exp(|d_i|^p) / (1 + sum_j (exp(|d_j|^p) - 1))

also depends on the other coordinates through C = sum_{j != i} (exp(|d_j|^p) - 1): the larger C, the
smaller the gradient a small difference gets (LogExp concentrates on the largest differences). Each
curve is computed by autograd through ``engine.losses.build_distance_loss`` on tensors built so that
coordinate i holds d and one other coordinate holds log(1 + C)^(1/p) (the rest are 0), so the figure
checks the implementation. The plot shows D * dL/dx_i, which removes the common 1/D factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.analysis.common import new_figure, save_figure, write_csv, write_json
from engine.losses import build_distance_loss

__all__ = ["DEFAULT_C_VALUES", "GradientCurve", "LossGradients", "loss_gradient", "loss_gradients",
           "plot_gradients", "write_gradients_data"]

DEFAULT_C_VALUES = (0.0, 1.0, 10.0, 100.0)
LOSSES: tuple[tuple[str, float], ...] = (("l1", 1.0), ("l2", 1.0), ("logexp", 1.0), ("logexp", 2.0))


@dataclass
class GradientCurve:
    loss: str  # l1 | l2 | logexp
    p: float  # LogExp exponent (1 for L1/L2, where it has no meaning)
    c: float  # remainder term C (0 for L1/L2)
    grad: np.ndarray  # dL/dx_i at each d

    @property
    def name(self) -> str:
        if self.loss == "logexp":
            return f"LogExp p={self.p:g}" + (f", C={self.c:g}" if self.c else "")
        return self.loss.upper()


@dataclass
class LossGradients:
    d: np.ndarray
    dimension: int
    curves: list[GradientCurve] = field(default_factory=list)

    def curve(self, loss: str, p: float = 1.0, c: float = 0.0) -> GradientCurve:
        for cur in self.curves:
            if cur.loss == loss and cur.p == p and cur.c == c:
                return cur
        raise KeyError((loss, p, c))


def _remainder_value(c: float, p: float) -> float:
    """The difference u with exp(|u|^p) - 1 = c."""
    return math.log1p(c) ** (1.0 / p)


def loss_gradient(loss: str, d: Sequence[float] | np.ndarray, dimension: int = 512, p: float = 1.0,
                  c: float = 0.0) -> np.ndarray:
    """dL/dx_0 of ``build_distance_loss(loss, p)`` (LogExp: the paper's per-sample Eq. 3) for one sample per value of ``d``: x has
    d at coordinate 0, log(1 + c)^(1/p) at coordinate 1 (so that the remainder term is c), 0 elsewhere;
    y = 0. The samples form one batch whose loss is multiplied by the batch size, which undoes the mean
    over samples: each row's gradient is that of the loss of its sample alone."""
    if dimension < 2:
        raise ValueError("dimension must be >= 2 (one varying coordinate, one for the remainder term)")
    if c < 0:
        raise ValueError(f"the remainder term C must be >= 0, got {c}")
    fn = build_distance_loss(loss, p=p)
    if fn is None:
        raise ValueError(f"{loss!r} has no gradient to plot")
    d = np.asarray(d, dtype=np.float64)
    x = torch.zeros(len(d), dimension, dtype=torch.float32)
    x[:, 0] = torch.from_numpy(d).float()
    x[:, 1] = _remainder_value(c, p)
    x.requires_grad_(True)
    y = torch.zeros_like(x)
    (grad,) = torch.autograd.grad(fn(x, y) * len(d), x)
    return grad[:, 0].double().numpy()


def loss_gradients(d: Sequence[float] | np.ndarray | None = None, dimension: int = 512,
                   c_values: Sequence[float] = DEFAULT_C_VALUES) -> LossGradients:
    """L1, L2 (C = 0 only: they ignore the other coordinates) and LogExp p = 1, 2 at every C."""
    d = np.linspace(-2.0, 2.0, 401) if d is None else np.asarray(d, dtype=np.float64)
    out = LossGradients(d=d, dimension=dimension)
    for loss, p in LOSSES:
        for c in (c_values if loss == "logexp" else (0.0,)):
            out.curves.append(GradientCurve(loss, p, float(c), loss_gradient(loss, d, dimension, p, float(c))))
    return out


def plot_gradients(data: LossGradients, path: Path, title: str = "") -> Path:
    """Three panels of D * dL/dx_i against d_i: every loss at C = 0, then LogExp p = 1 and p = 2 per C."""
    fig = new_figure(14, 4.4)
    axes = fig.subplots(1, 3, sharey=False)
    scale = data.dimension
    for cur in data.curves:
        if cur.c == 0:
            style = "--" if cur.loss == "logexp" else "-"
            axes[0].plot(data.d, scale * cur.grad, linestyle=style, label=cur.name)
    for ax, p in ((axes[1], 1.0), (axes[2], 2.0)):
        for cur in data.curves:
            if cur.loss == "logexp" and cur.p == p:
                ax.plot(data.d, scale * cur.grad, label=f"C = {cur.c:g}")
        ax.set_title(f"LogExp p={p:g}: effect of the other coordinates' C", fontsize="medium")
    axes[0].set_title("all losses at C = 0 (LogExp p=1 = L1, p=2 = L2 there)", fontsize="medium")
    for ax in axes:
        ax.axhline(0, color="black", linewidth=0.6)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel(r"$d_i = x_i - y_i$")
        ax.set_ylabel(rf"$D \cdot \partial L / \partial x_i$  (D = {data.dimension})")
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize="small")
    fig.suptitle(title or "First-order derivatives of the distance losses, by autograd on engine.losses (Fig. 4)")
    return save_figure(fig, path)


def write_gradients_data(data: LossGradients, csv_path: Path, json_path: Path) -> list[Path]:
    rows = [(cur.loss, cur.p, cur.c, float(d), float(g), float(g * data.dimension))
            for cur in data.curves for d, g in zip(data.d, cur.grad, strict=True)]
    write_csv(csv_path, ["loss", "p", "C", "d", "grad", "grad_times_D"], rows)
    write_json(json_path, {"dimension": data.dimension, "d_min": float(data.d.min()), "d_max": float(data.d.max()),
                           "points": int(data.d.size),
                           "curves": [{"loss": c.loss, "p": c.p, "C": c.c, "label": c.name} for c in data.curves],
                           "construction": "x: d at coordinate 0, log(1+C)^(1/p) at coordinate 1, 0 elsewhere; "
                                           "y = 0; gradient by torch.autograd through "
                                           "engine.losses.build_distance_loss"})
    return [Path(csv_path), Path(json_path)]
