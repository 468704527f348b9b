"""What the engine knows about its loss terms, without torch.

The objective has two kinds of term (ARCHITECTURE.md, "The method the engine implements"): a classification
head (``loss.head``) applied to the HR and the LR embeddings, and a feature distance (``loss.distance``)
between the normalised HR and LR embeddings, weighted by ``loss.lambda`` (which the trainer reads, for every
distance term alike). Each term is declared once here with a one-line description and the config options
its builder reads. The builders live in ``engine.losses`` and register with ``@register_head(NAME)`` /
``@register_distance(NAME)``; ``build_head`` / ``build_distance_loss`` pass a builder exactly the options
declared here, so a declaration cannot leave out an option its builder needs (the call would fail) and a
builder never sees one it does not declare.

This module imports nothing heavier than ``engine.registry``: ``engine.config`` validates ``loss.head``,
``loss.distance`` and ``loss.reduction`` against it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.registry import Bindings

HEAD = "head"
DISTANCE = "distance"

# loss.reduction: how LogExp reduces over the batch, "sample" (the paper's Eq. 3, one log per sample) or
# "batch" (the released code, one log over the batch); engine.losses documents both.
DISTANCE_REDUCTIONS: tuple[str, ...] = ("sample", "batch")


@dataclass(frozen=True)
class LossTermInfo:
    """One loss term. ``role``: ``"head"`` or ``"distance"``. ``options``: the config keys its builder reads
    (``loss.s``), each passed to the builder as the keyword after the dot (``s``)."""

    name: str
    role: str
    description: str
    options: tuple[str, ...] = ()

    @property
    def keywords(self) -> tuple[str, ...]:
        """The builder's keyword for each option (``loss.s`` -> ``s``)."""
        return tuple(key.partition(".")[2] for key in self.options)


# In the order error messages list them: the paper's choice first.
_HEADS = (
    LossTermInfo("cosface", HEAD, "CosFace, large-margin cosine: CE of s * (cos - m) on the target class "
                 "(the paper's head, s = 48, m = 0.4)", ("loss.s", "loss.m")),
    LossTermInfo("arcface", HEAD, "ArcFace, additive angular margin: CE of s * cos(theta + m) on the target "
                 "class (m in radians, below pi/2)", ("loss.s", "loss.m")),
    LossTermInfo("softmax", HEAD, "plain softmax: CE of the bias-free linear logits, no normalisation or margin"),
)
_DISTANCES = (
    LossTermInfo("none", DISTANCE, "no distance term: the LR copy is only classified"),
    LossTermInfo("l1", DISTANCE, "L1: mean absolute coordinate difference"),
    LossTermInfo("l2", DISTANCE, "L2: mean over samples of 1/(2D) sum of squared differences"),
    LossTermInfo("smoothl1", DISTANCE, "smooth L1 (Huber): quadratic below the threshold beta, linear above",
                 ("loss.beta",)),
    LossTermInfo("logexp", DISTANCE, "LogExp (the paper's Eq. 3): 1/(pD) log(1 + sum (exp(|d|^p) - 1)), "
                 "per sample or over the batch", ("loss.p", "loss.reduction")),
)
_HEAD_BY_NAME = {info.name: info for info in _HEADS}
_DISTANCE_BY_NAME = {info.name: info for info in _DISTANCES}


def heads() -> tuple[LossTermInfo, ...]:
    return _HEADS


def head_names() -> tuple[str, ...]:
    return tuple(info.name for info in _HEADS)


def head_info(name: str) -> LossTermInfo:
    """The declaration of head ``name``; KeyError listing the declared heads for any other name."""
    try:
        return _HEAD_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown loss head {name!r}; the engine's heads are: {', '.join(head_names())}") from None


def distances() -> tuple[LossTermInfo, ...]:
    return _DISTANCES


def distance_names() -> tuple[str, ...]:
    return tuple(info.name for info in _DISTANCES)


def distance_info(name: str) -> LossTermInfo:
    """The declaration of distance term ``name``; KeyError listing the declared ones for any other name."""
    try:
        return _DISTANCE_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown distance term {name!r}; the engine's distance terms are: "
                       f"{', '.join(distance_names())}") from None


# Builders. A head: (embedding_size, num_classes, **options) -> nn.Module with forward(embeddings, labels).
# A distance term: (**options) -> a loss (x, y) -> scalar, or None for "none".
_HEAD_BUILDERS: Bindings = Bindings("loss head", head_names, "engine.loss_registry", "register_head",
                                    verb="is built by")
_DISTANCE_BUILDERS: Bindings = Bindings("distance term", distance_names, "engine.loss_registry",
                                        "register_distance", verb="is built by")


def register_head(name: str):
    """Decorator: the decorated class or function builds the declared head ``name``."""
    return _HEAD_BUILDERS.register(name)


def register_distance(name: str):
    """Decorator: the decorated function builds the declared distance term ``name``."""
    return _DISTANCE_BUILDERS.register(name)


def head_builders() -> dict:
    """name -> builder for every declared head (KeyError if one has none); complete once engine.losses is imported."""
    return _HEAD_BUILDERS.complete()


def distance_builders() -> dict:
    """name -> builder for every declared distance term (KeyError if one has none), as for ``head_builders``."""
    return _DISTANCE_BUILDERS.complete()
