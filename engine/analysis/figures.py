"""Every figure by name: compute its data for a list of models, write ``<name>.png`` and the data
(``<name>.csv`` / ``<name>.json``) into a directory. This is what ``lrfr analyze`` calls; notebooks can
call the per-figure functions of the sibling modules directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.analysis.common import HR, AnalysedModel, FigureFiles, load_pairs, training_faces
from engine.analysis.dimerror import dimension_errors, plot_dimerror, write_dimerror_data
from engine.analysis.embedding import PROJECTIONS, embedding_projection, plot_embedding, write_embedding_data
from engine.analysis.gradients import DEFAULT_C_VALUES, loss_gradients, plot_gradients, write_gradients_data
from engine.analysis.gradnorm import gradient_norms, plot_gradnorm, write_gradnorm_csv
from engine.analysis.resolution import plot_resolution, resolution_sweep, write_resolution_csv
from engine.analysis.roc_curves import plot_roc, roc_data, write_roc_data
from engine.analysis.similarity import pair_similarities, plot_similarity, write_similarity_data
from engine.data.pairs import VerificationPairs
from engine.errors import LrfrError

__all__ = ["AnalysisOptions", "FIGURES", "FIGURE_HELP", "MODEL_FREE_FIGURES", "make_figure"]

EMBEDDING_RESOLUTIONS = (HR, 42, 28, 20, 14, 7)
DEFAULT_LR = 14


@dataclass
class AnalysisOptions:
    """Knobs of the figures; ``None`` means each figure's default (documented per field)."""

    # resolution / gradnorm: each model's eval.resolutions; embedding: HR, 42, 28, 20, 14, 7 (0 = HR).
    resolutions: list[int] | None = None
    # LR probe (px) of similarity and dimerror (default 14) and roc (default: none, the benchmark's images).
    resolution: int | None = None
    benchmark: str = "lfw"  # lfw | xqlfw: the verification pairs of resolution/similarity/roc/dimerror/embedding
    method: str = "pca"  # embedding: pca | tsne
    faces: int = 200  # embedding: how many faces (first image of the first pairs)
    gradnorm_images: int = 64  # gradnorm: labelled training faces
    gradnorm_batch: int | None = None  # gradnorm: batch size (None: all in one batch)
    gradnorm_train_mode: bool = False  # gradnorm: BatchNorm batch statistics (on a copy) instead of eval mode
    degrade_both: bool = False  # resolution: degrade both images of a pair, not only the second
    far_target: float = 1e-3  # roc
    c_values: list[float] = field(default_factory=lambda: list(DEFAULT_C_VALUES))  # gradients
    dimension: int | None = None  # gradients: D (default: the first model's embedding size, else 512)
    seed: int = 0
    device: str = "cpu"
    title: str = ""


class _Pairs:
    """Each benchmark's pairs loaded once per (data source, input size) across the models of a figure."""

    def __init__(self) -> None:
        self._cache: dict[tuple, VerificationPairs] = {}

    def get(self, model: AnalysedModel, benchmark: str) -> VerificationPairs:
        e = model.cfg.eval
        key = (benchmark, e.source, e.standin_size, e.seed, model.input_size)
        if key not in self._cache:
            self._cache[key] = load_pairs(model.cfg, benchmark)
        return self._cache[key]


def _batch(model: AnalysedModel) -> int:
    return model.cfg.eval.batch_size


def _need_models(name: str, models: Sequence[AnalysedModel]) -> None:
    if not models:
        raise LrfrError(f"the {name} figure needs at least one trained model (a run id or a group)")


def _resolution(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    _need_models("resolution", models)
    pairs = _Pairs()
    bench = "lowres_lfw" if opt.benchmark == "lfw" else opt.benchmark  # the LFW reader lowres_lfw uses
    curves = [resolution_sweep(m.backbone, pairs.get(m, bench), opt.resolutions or m.cfg.eval.resolutions,
                               opt.device, _batch(m), m.label, degrade_both=opt.degrade_both) for m in models]
    png = plot_resolution(curves, out / "resolution.png", opt.title)
    return FigureFiles("resolution", png, [write_resolution_csv(curves, out / "resolution.csv")])


def _gradnorm(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    _need_models("gradnorm", models)
    curves = []
    for m in models:
        if m.head is None:
            raise LrfrError(f"{m.label}: the checkpoint holds no classification head, which gradnorm needs")
        images, labels = training_faces(m.cfg, opt.gradnorm_images, opt.seed)
        if int(labels.max()) >= m.head.num_classes:
            raise LrfrError(f"{m.label}: the training set now has more identities than the trained head "
                            f"({m.head.num_classes}); is data.dataset still the one the run trained on?")
        curves.append(gradient_norms(m.backbone, m.head, images, labels, opt.resolutions or m.cfg.eval.resolutions,
                                     opt.device, opt.gradnorm_batch, m.label, m.cfg.loss.head,
                                     train_mode=opt.gradnorm_train_mode))
    png = plot_gradnorm(curves, out / "gradnorm.png", opt.title)
    return FigureFiles("gradnorm", png, [write_gradnorm_csv(curves, out / "gradnorm.csv")])


def _embedding(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    _need_models("embedding", models)
    if opt.method not in PROJECTIONS:
        raise LrfrError(f"unknown projection {opt.method!r}; choose one of: {', '.join(PROJECTIONS)}")
    pairs = _Pairs()
    projections = []
    for m in models:
        faces = pairs.get(m, opt.benchmark).first[: opt.faces]
        projections.append(embedding_projection(m.backbone, faces, opt.resolutions or EMBEDDING_RESOLUTIONS,
                                                opt.method, opt.device, _batch(m), m.label, opt.seed))
    png = plot_embedding(projections, out / "embedding.png", opt.title)
    return FigureFiles("embedding", png, write_embedding_data(projections, out / "embedding.csv",
                                                              out / "embedding.json"))


def _similarity(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    _need_models("similarity", models)
    pairs = _Pairs()
    r = opt.resolution or DEFAULT_LR
    data = [pair_similarities(m.backbone, pairs.get(m, opt.benchmark), r, opt.device, _batch(m), m.label,
                              baseline=m.is_baseline) for m in models]
    png = plot_similarity(data, out / "similarity.png", title=opt.title)
    return FigureFiles("similarity", png, write_similarity_data(data, out / "similarity.csv",
                                                                out / "similarity.json"))


def _roc(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    _need_models("roc", models)
    pairs = _Pairs()
    curves = [roc_data(m.backbone, pairs.get(m, opt.benchmark), opt.device, _batch(m), m.label, opt.benchmark,
                       opt.resolution, opt.far_target) for m in models]
    png = plot_roc(curves, out / "roc.png", opt.title)
    return FigureFiles("roc", png, write_roc_data(curves, out / "roc.csv", out / "roc.json"))


def _dimerror(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    _need_models("dimerror", models)
    pairs = _Pairs()
    r = opt.resolution or DEFAULT_LR
    data = [dimension_errors(m.backbone, pairs.get(m, opt.benchmark).images, r, opt.device, _batch(m), m.label)
            for m in models]
    png = plot_dimerror(data, out / "dimerror.png", title=opt.title)
    return FigureFiles("dimerror", png, write_dimerror_data(data, out / "dimerror.csv", out / "dimerror.json"))


def _gradients(models, out: Path, opt: AnalysisOptions) -> FigureFiles:
    dimension = opt.dimension or (models[0].cfg.model.embedding_size if models else 512)
    data = loss_gradients(dimension=dimension, c_values=opt.c_values)
    png = plot_gradients(data, out / "gradients.png", opt.title)
    return FigureFiles("gradients", png, write_gradients_data(data, out / "gradients.csv", out / "gradients.json"))


FIGURES: dict[str, Callable[[Sequence[AnalysedModel], Path, AnalysisOptions], FigureFiles]] = {
    "resolution": _resolution,
    "gradnorm": _gradnorm,
    "embedding": _embedding,
    "similarity": _similarity,
    "roc": _roc,
    "dimerror": _dimerror,
    "gradients": _gradients,
}

FIGURE_HELP = {
    "resolution": "Fig. 3a: LFW accuracy per probe resolution (+ SSIM of the probe)",
    "gradnorm": "Fig. 3b: sum of backbone gradient norms of the trained head's loss per resolution",
    "embedding": "Fig. 3c/7: PCA or t-SNE of the same faces at HR, 42, 28, 20, 14, 7 px with centres",
    "similarity": "Fig. 1: positive/negative cosine histograms at HR and a low resolution",
    "roc": "Fig. 5: ROC curves (log FAR) with TAR@FAR=1e-3 or the smallest resolvable FAR",
    "dimerror": "Fig. 6: distribution of the per-dimension mean |f_hr - f_lr|",
    "gradients": "Fig. 4: dL/dx of L1, L2, LogExp p=1/2 by autograd (no model needed)",
}

MODEL_FREE_FIGURES = ("gradients",)


def make_figure(name: str, models: Sequence[AnalysedModel], out_dir: str | Path,
                options: AnalysisOptions | None = None) -> FigureFiles:
    """Compute figure ``name`` for ``models`` and write it with its data into ``out_dir``."""
    if name not in FIGURES:
        raise LrfrError(f"unknown figure {name!r}; choose from: {', '.join(FIGURES)}")
    options = options or AnalysisOptions()
    if options.benchmark not in ("lfw", "xqlfw"):
        raise LrfrError(f"--benchmark must be lfw or xqlfw, got {options.benchmark!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return FIGURES[name](list(models), out, options)
