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

Each backbone is declared in ``engine.models.registry`` (``models()``, ``model_info(name)``), which
this package loads without torch, so that ``engine.config`` can validate ``model.name`` and the
backbones can be listed cheaply. The torch-side names (``get_model``, ``MODELS``, ``IResNet``,
``ResNet``, ``convert_released_state_dict``) load their modules, and torch, on first use.
"""

from __future__ import annotations

from typing import Any

from engine.models.registry import ModelInfo, list_models, model_info, model_names, models, register_model


def __getattr__(name: str) -> Any:
    # PEP 562: the heavy names are imported when first asked for, so that importing the registry (which
    # loads this package first) never loads torch.
    if name in ("get_model", "MODELS"):
        from engine.models import factory

        return getattr(factory, name)
    if name == "IResNet":
        from engine.models import iresnet

        return iresnet.IResNet
    if name in ("ResNet", "convert_released_state_dict"):
        from engine.models import resnet

        return getattr(resnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "IResNet", "ModelInfo", "ResNet", "convert_released_state_dict", "get_model", "list_models",
           "model_info", "model_names", "models", "register_model"]
