"""Published models in the same tables: load an exported embedding model as a plain callable.

Accepted: TorchScript (``torch.jit.save``), ``torch.export`` programs (``.pt2``) and, with the
``onnx`` extra installed, ONNX files. Each must take a float batch N x 3 x S x S in [-1, 1] and
return N x D embeddings. Export with a dynamic batch dimension
(``torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})``):
evaluation batches vary in size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.errors import LrfrError
from engine.evaluate.embeddings import EmbedFn


def load_external_model(path: str | Path, device: torch.device | str = "cpu") -> EmbedFn:
    path = Path(path)
    if not path.is_file():
        raise LrfrError(f"model file {path} does not exist")
    device = torch.device(device)
    if path.suffix == ".onnx":
        return _load_onnx(path)
    try:
        if path.suffix == ".pt2":
            module = torch.export.load(str(path)).module().to(device)
        else:
            module = torch.jit.load(str(path), map_location=device)
            module.eval()
    except Exception as exc:  # torch raises many types for files of the wrong kind
        raise LrfrError(f"cannot load {path} as a TorchScript or torch.export model: {exc}") from None
    return module


def _load_onnx(path: Path) -> EmbedFn:
    try:
        import onnxruntime as ort
    except ImportError:
        raise LrfrError("ONNX models need onnxruntime: pip install 'lrfr[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {input_name: x.detach().cpu().numpy().astype("float32")})[0]
        return torch.from_numpy(out).to(x.device)

    return run
