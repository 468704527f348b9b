"""Figure 3b: how hard each resolution is for a trained model, measured by its gradient norms.

For a fixed set of labelled training faces degraded to r x r (and up-sampled back), the value at r is

    G(r) = sum over backbone parameters p of || d L / d p ||_2,   L = head(F(degrade(x, r)), y),

where ``head`` is the classification head the run was trained with (CosFace in the paper) and ``y``
the training labels. A larger G means the model is further from fitting those inputs: the paper's
difficulty measure. The backbone runs in eval mode by default (BatchNorm uses its running statistics,
dropout is off), so G depends on the model and the inputs only; ``train_mode=True`` uses batch
statistics on a copy of the model, as during training. Nothing is updated either way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from engine.analysis.common import new_figure, save_figure, sweep_resolutions, write_csv
from engine.augment import degrade

__all__ = ["GradNormCurve", "gradient_norm", "gradient_norms", "plot_gradnorm", "write_gradnorm_csv"]


@dataclass
class GradNormCurve:
    """One model's gradient-norm sum per resolution (ascending px; the input size is HR)."""

    label: str
    input_size: int
    head: str
    resolutions: list[int]
    grad_norm: list[float]  # mean over batches
    grad_norm_std: list[float]  # population std over batches (0 for one batch)
    loss: list[float]  # mean head loss over batches
    per_batch: list[list[float]]  # per resolution, the value of each batch
    num_images: int


def _model_input(images: Tensor) -> Tensor:
    from engine.train import to_model_input

    return to_model_input(images, channels_last=False)


def gradient_norm(backbone: nn.Module, head: nn.Module, images: Tensor, labels: Tensor,
                  resolution: int | None = None) -> tuple[float, float]:
    """(sum_p ||dL/dp||_2 over ``backbone``'s trainable parameters, L) for one batch of uint8 faces at
    ``resolution`` (None or >= the image size: as given). Modes (eval/train) are the caller's."""
    if resolution is not None and resolution < images.shape[-1]:
        images = degrade(images, resolution)
    params = [p for p in backbone.parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = head(backbone(_model_input(images)), labels)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    total = sum(float(g.detach().float().norm()) for g in grads if g is not None)
    return total, float(loss.detach())


def gradient_norms(backbone: nn.Module, head: nn.Module, images: Tensor, labels: Tensor,
                   resolutions: Sequence[int], device: torch.device | str = "cpu",
                   batch_size: int | None = None, label: str = "model", head_kind: str = "",
                   train_mode: bool = False) -> GradNormCurve:
    """``gradient_norm`` at each resolution, for ``images`` split into batches of ``batch_size``
    (None: one batch) and averaged over the batches. ``labels`` must be the head's class indices."""
    device = torch.device(device)
    size = int(images.shape[-1])
    sizes = sweep_resolutions(resolutions, size)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError("need as many labels as images, and at least one image")
    num_classes = getattr(head, "num_classes", None)
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} is outside the head's {num_classes} classes")
    net = copy.deepcopy(backbone).train() if train_mode else backbone
    was_training = net.training
    if not train_mode:
        net.eval()
    head_was_training = head.training
    head.eval()
    step = batch_size or len(images)
    per_batch: list[list[float]] = []
    losses: list[float] = []
    try:
        for r in sizes:
            values, batch_losses = [], []
            for start in range(0, len(images), step):
                x = images[start : start + step].to(device)
                y = labels[start : start + step].to(device)
                value, loss = gradient_norm(net, head, x, y, r)
                values.append(value)
                batch_losses.append(loss)
            per_batch.append(values)
            losses.append(float(np.mean(batch_losses)))
    finally:
        if not train_mode:
            net.train(was_training)
        head.train(head_was_training)
    return GradNormCurve(label=label, input_size=size, head=head_kind or type(head).__name__, resolutions=sizes,
                         grad_norm=[float(np.mean(v)) for v in per_batch],
                         grad_norm_std=[float(np.std(v)) for v in per_batch], loss=losses, per_batch=per_batch,
                         num_images=len(images))


def plot_gradnorm(curves: Sequence[GradNormCurve], path: Path, title: str = "") -> Path:
    """G(r) per model (mean +- std over batches), and the head loss beside it."""
    fig = new_figure(10, 4.2)
    ax, ax_loss = fig.subplots(1, 2)
    ticks: dict[int, str] = {}
    for curve in curves:
        x = np.asarray(curve.resolutions, dtype=float)
        mean, std = np.asarray(curve.grad_norm), np.asarray(curve.grad_norm_std)
        (line,) = ax.plot(x, mean, marker="o", label=curve.label)
        if np.any(std > 0):
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax_loss.plot(x, curve.loss, marker="o", label=curve.label)
        for r in curve.resolutions:
            ticks.setdefault(r, "HR" if r >= curve.input_size else str(r))
    for a in (ax, ax_loss):
        a.set_xscale("log")
        a.set_xticks(sorted(ticks), [ticks[r] for r in sorted(ticks)])
        a.minorticks_off()
        a.set_xlabel("input resolution (px)")
        a.grid(True, alpha=0.3)
        a.legend(fontsize="small")
    heads = sorted({c.head for c in curves})
    ax.set_ylabel(r"$\sum_p \|\partial L / \partial p\|_2$ (backbone)")
    ax.set_title("gradient-norm sum per resolution")
    ax_loss.set_ylabel(f"{'/'.join(heads)} loss")
    ax_loss.set_title("classification loss of the trained head")
    fig.suptitle(title or f"Difficulty of each resolution (Fig. 3b), {curves[0].num_images} training faces"
                 if curves else "Difficulty of each resolution (Fig. 3b)")
    return save_figure(fig, path)


def write_gradnorm_csv(curves: Sequence[GradNormCurve], path: Path) -> Path:
    rows = [(c.label, r, r >= c.input_size, g, s, loss, c.head, c.num_images)
            for c in curves
            for r, g, s, loss in zip(c.resolutions, c.grad_norm, c.grad_norm_std, c.loss, strict=True)]
    return write_csv(path, ["model", "resolution_px", "is_hr", "grad_norm_sum", "grad_norm_sum_std", "loss",
                            "head", "num_images"], rows)
