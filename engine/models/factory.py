"""``get_model``: build a declared backbone by name (this module imports torch and every builder).

Importing it imports ``engine.models.iresnet`` and ``engine.models.resnet``, whose builders register
themselves with ``@register_model``; ``MODELS`` is then checked against the declarations in
``engine.models.registry`` (a declared backbone without a builder fails here, at import).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from engine.errors import ConfigError
from engine.models import iresnet as _iresnet  # noqa: F401  (registers the IResNet builders)
from engine.models import resnet as _resnet  # noqa: F401  (registers the released-code ResNet builders)
from engine.models.registry import builders, list_models

MODELS: dict[str, Callable[..., nn.Module]] = builders()


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
            (``model_info(name).default_dropout``: 0.0 for IResNet, 0.4 for the paper-code ResNet).
        input_size: side of the square input images.
        **kw: passed to the constructor (``model_info(name).options``), e.g. ``normalize_output=True``
            for the paper-code ResNets or ``zero_init_residual=True`` (both families).

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
