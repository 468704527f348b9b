"""Face-recognition backbones behind one ``get_model(name)``.

Two families:

- ``iresnet18/34/50/100``: insightface's IResNet (arcface_torch), the usual
  choice for face recognition; head dropout 0 by default.
- ``resnet34/50``: the paper's released-code networks (hurricanelx/LRFR
  ``model/resnet.py``: torchvision blocks behind a 3x3 stride-1 stem, 7x7 final
  map at 112 px, BN-Dropout(0.4)-FC-BN head); see ``engine.models.resnet``.

Every backbone maps N x 3 x S x S images in [-1, 1] to N x ``embedding_size``
embeddings that are not L2-normalised (unless a paper-code ResNet is built
with ``normalize_output=True``); the embedding is float32 also under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from engine.errors import ConfigError
from engine.models.iresnet import IResNet, iresnet18, iresnet34, iresnet50, iresnet100
from engine.models.resnet import ResNet, convert_released_state_dict, resnet34, resnet50

MODELS: dict[str, Callable[..., nn.Module]] = {
    "iresnet18": iresnet18,
    "iresnet34": iresnet34,
    "iresnet50": iresnet50,
    "iresnet100": iresnet100,
    "resnet34": resnet34,
    "resnet50": resnet50,
}


def list_models() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(MODELS)


def get_model(
    name: str,
    embedding_size: int = 512,
    width: float = 1.0,
    dropout: float | None = None,
    input_size: int = 112,
    **kw,
) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: one of ``list_models()``.
        embedding_size: output dimension.
        width: channel multiplier (0.25 -> 16/32/64/128 base channels).
        dropout: head dropout; ``None`` keeps the family's own default
            (0.0 for IResNet, 0.4 for the paper-code ResNet).
        input_size: side of the square input images.
        **kw: passed to the constructor, e.g. ``normalize_output=True`` for the
            paper-code ResNets or ``zero_init_residual=True`` (both families).

    Raises:
        ConfigError: ``name`` is not registered, or a size is out of range
            (width <= 0, embedding_size < 1, input_size too small).
    """
    try:
        build = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from None
    if dropout is not None:
        kw["dropout"] = dropout
    try:
        return build(embedding_size=embedding_size, width=width, input_size=input_size, **kw)
    except ValueError as exc:
        # The constructors only raise ValueError for out-of-range arguments.
        raise ConfigError(f"model {name!r}: {exc}") from None


__all__ = ["MODELS", "IResNet", "ResNet", "convert_released_state_dict", "get_model", "list_models"]
