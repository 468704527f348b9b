"""The paper's analyses as data and plots: resolution sweeps (Fig. 3a), gradient norms per resolution
(Fig. 3b), embedding projections (Fig. 3c / 7), pair-similarity histograms (Fig. 1), ROC curves
(Fig. 5), per-dimension HR-LR errors (Fig. 6) and the distance losses' derivatives (Fig. 4).

Each figure has a module with a pure function that takes backbones (and configs, pairs, faces) and
returns a dataclass of arrays, a ``plot_*`` function that draws that data into a PNG, and a
``write_*`` function for the CSV/JSON beside it. ``make_figure(name, models, out_dir, options)`` runs
all three for a list of ``AnalysedModel`` (``load_model(checkpoint)``). Plots use matplotlib's
object-oriented API on the Agg canvas (no pyplot state, no display needed).
"""

from engine.analysis.common import (
    HR,
    AnalysedModel,
    FigureFiles,
    load_model,
    load_pairs,
    sweep_resolutions,
    training_faces,
)
from engine.analysis.dimerror import DimensionErrors, dimension_errors, plot_dimerror
from engine.analysis.embedding import PROJECTIONS, EmbeddingProjection, embedding_projection, plot_embedding
from engine.analysis.figures import FIGURE_HELP, FIGURES, MODEL_FREE_FIGURES, AnalysisOptions, make_figure
from engine.analysis.gradients import LossGradients, loss_gradient, loss_gradients, plot_gradients
from engine.analysis.gradnorm import GradNormCurve, gradient_norm, gradient_norms, plot_gradnorm
from engine.analysis.resolution import ResolutionCurve, plot_resolution, resolution_sweep
from engine.analysis.roc_curves import RocData, plot_roc, resolvable_far, roc_data
from engine.analysis.similarity import PairSimilarities, pair_similarities, plot_similarity

__all__ = [
    "FIGURES",
    "FIGURE_HELP",
    "HR",
    "MODEL_FREE_FIGURES",
    "PROJECTIONS",
    "AnalysedModel",
    "AnalysisOptions",
    "DimensionErrors",
    "EmbeddingProjection",
    "FigureFiles",
    "GradNormCurve",
    "LossGradients",
    "PairSimilarities",
    "ResolutionCurve",
    "RocData",
    "dimension_errors",
    "embedding_projection",
    "gradient_norm",
    "gradient_norms",
    "load_model",
    "load_pairs",
    "loss_gradient",
    "loss_gradients",
    "make_figure",
    "pair_similarities",
    "plot_dimerror",
    "plot_embedding",
    "plot_gradients",
    "plot_gradnorm",
    "plot_resolution",
    "plot_roc",
    "plot_similarity",
    "resolution_sweep",
    "resolvable_far",
    "roc_data",
    "sweep_resolutions",
    "training_faces",
]
