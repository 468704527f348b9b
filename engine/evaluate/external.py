"""Published models in the same tables: load an exported embedding model as a plain callable.

Accepted: TorchScript (``torch.jit.save``), ``torch.export`` programs (``.pt2``) and, with the
``onnx`` extra installed, ONNX files. Each must take a float batch N x 3 x S x S in [-1, 1] and
return N x D embeddings. Export with a dynamic batch dimension
(``torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})``):
evaluation batches vary in size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from engine.errors import LrfrError
from engine.evaluate.embeddings import EmbedFn


def load_external_model(path: str | Path, device: torch.device | str = "cpu", input_size: int = 112) -> EmbedFn:
    """The model as a callable, checked on batches of 1 and 3 ``input_size`` faces (a LrfrError saying
    how to re-export it when it was exported with a fixed batch size), before any evaluation starts."""
    path = Path(path)
    if not path.is_file():
        raise LrfrError(f"model file {path} does not exist")
    device = torch.device(device)
    fn = _load_onnx(path) if path.suffix == ".onnx" else _load_torch(path, device)
    _check_batch_dimension(fn, path, input_size, device)
    return fn


def _check_batch_dimension(fn: EmbedFn, path: Path, input_size: int, device: torch.device) -> None:
    for n in (1, 3):  # evaluation batches vary, the last one is usually short
        x = torch.zeros(n, 3, input_size, input_size, device=device)
        try:
            with torch.no_grad():
                out = fn(x)
        except Exception as exc:  # torch.export guards, ONNX runtime shape errors, TorchScript asserts
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LrfrError(f"{path.name} fails on a batch of {n} {input_size}x{input_size} faces ({reason}); "
                            "it needs a dynamic batch dimension: export it with torch.export.export(model, (x,), "
                            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}) (or set the face size with "
                            "--set model.input_size=N)") from None
        if out.ndim != 2 or out.shape[0] != n:
            raise LrfrError(f"{path.name} maps a batch of {n} faces to shape {tuple(out.shape)}; an embedding "
                            f"model must return N x D")


def _load_torch(path: Path, device: torch.device) -> EmbedFn:
    try:
        if path.suffix == ".pt2":
            module = torch.export.load(str(path)).module().to(device)
        else:
            with warnings.catch_warnings():  # torch deprecates TorchScript; published models still ship as it
                warnings.simplefilter("ignore", FutureWarning)
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
