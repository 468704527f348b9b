"""What the engine knows about its backbones, without torch.

Each backbone is declared once here with what a researcher compares them by (family, stage depths and
block, head dropout, size, whether it is the paper's released network and where the design comes from).
The function that builds it (in ``engine.models.iresnet`` / ``engine.models.resnet``) is registered
against this declaration with ``@register_model(NAME)``, so a backbone cannot be built without being
declared, nor declared without a builder (``engine.models.factory`` checks when it is imported).

This module imports nothing heavier than ``engine.registry``: ``engine.config`` validates ``model.name``
against it, and listing the backbones does not load torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.registry import Bindings

IRESNET = "IResNet"
RELEASED_RESNET = "ResNet (released code)"


@dataclass(frozen=True)
class ModelInfo:
    """One backbone, as ``get_model`` builds it.

    ``layers``: blocks per stage; ``block``: the residual block class. ``default_dropout``: the head dropout
    when ``get_model`` is given none (``model.dropout`` in a config always gives one). ``released``: the
    network of the paper's released code (hurricanelx/LRFR) rather than the paper's text. ``params_m``:
    millions of parameters at the defaults (112 px input, 512-d embedding, width 1). ``options``: the
    constructor keywords beyond the common ones (embedding_size, width, dropout, input_size), which
    ``get_model`` passes through.
    """

    name: str
    family: str
    description: str
    layers: tuple[int, int, int, int]
    block: str
    default_dropout: float
    released: bool
    params_m: float
    source: str
    options: tuple[str, ...]


_IRESNET_SOURCE = "insightface arcface_torch (backbones/iresnet.py)"
_IRESNET_OPTIONS = ("zero_init_residual", "fix_embedding_scale")
_RELEASED_SOURCE = "hurricanelx/LRFR model/resnet.py"
_RELEASED_OPTIONS = ("normalize_output", "zero_init_residual")

_DECLARED = (
    ModelInfo("iresnet18", IRESNET, "insightface IResNet-18: pre-activation IBasicBlocks, BN-Dropout-FC-BN head",
              (2, 2, 2, 2), "IBasicBlock", 0.0, False, 24.03, _IRESNET_SOURCE, _IRESNET_OPTIONS),
    ModelInfo("iresnet34", IRESNET, "insightface IResNet-34: what the paper trains as ResNet34 (preset r34)",
              (3, 4, 6, 3), "IBasicBlock", 0.0, False, 34.14, _IRESNET_SOURCE, _IRESNET_OPTIONS),
    ModelInfo("iresnet50", IRESNET, "insightface IResNet-50 (basic blocks, not bottlenecks): what the "
              "paper trains as ResNet50 (preset r50)", (3, 4, 14, 3), "IBasicBlock", 0.0, False, 43.59, _IRESNET_SOURCE,
              _IRESNET_OPTIONS),
    ModelInfo("iresnet100", IRESNET, "insightface IResNet-100, the usual large face-recognition backbone",
              (3, 13, 30, 3), "IBasicBlock", 0.0, False, 65.16, _IRESNET_SOURCE, _IRESNET_OPTIONS),
    ModelInfo("resnet34", RELEASED_RESNET, "the released code's ResNet34: 3x3 stride-1 stem and max-pool, "
              "torchvision BasicBlocks, BN-Dropout(0.4)-FC-BN head (preset r34-code)",
              (3, 4, 6, 3), "BasicBlock", 0.4, True, 34.12, _RELEASED_SOURCE, _RELEASED_OPTIONS),
    ModelInfo("resnet50", RELEASED_RESNET, "the released code's ResNet50: its ResNet34 with torchvision "
              "Bottlenecks (x4 channels), a 51 M-parameter FC", (3, 4, 6, 3), "Bottleneck", 0.4, True, 74.89,
              _RELEASED_SOURCE, _RELEASED_OPTIONS),
)
_BY_NAME = {info.name: info for info in _DECLARED}


def models() -> tuple[ModelInfo, ...]:
    """Every backbone, by family then depth."""
    return _DECLARED


def model_names() -> tuple[str, ...]:
    """Every backbone's name, in declaration order."""
    return tuple(info.name for info in _DECLARED)


def list_models() -> list[str]:
    """Registered backbone names, sorted (the order error messages list them in)."""
    return sorted(_BY_NAME)


def model_info(name: str) -> ModelInfo:
    """The declaration of backbone ``name``; KeyError listing the declared ones for any other name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the engine's models are: {', '.join(list_models())}") from None


# The builders: name -> a callable taking (embedding_size, width, input_size, dropout, *options) keywords.
_BUILDERS: Bindings = Bindings("model", model_names, "engine.models.registry", "register_model",
                               verb="is built by")


def register_model(name: str):
    """Decorator: the decorated function builds the declared backbone ``name`` (KeyError if undeclared or
    already built by another function)."""
    return _BUILDERS.register(name)


def builders() -> dict:
    """name -> builder for every declared backbone, in declaration order; KeyError if one has none. Only
    complete once the builder modules are imported (``engine.models.factory`` imports them)."""
    return _BUILDERS.complete()
