"""Face datasets. Every dataset yields ``(uint8 tensor 3 x H x W RGB, int label)``; loaders only decode.

* ``synthetic``: the built-in cartoon face generator (``render_face``, ``SyntheticFaces.materialise``,
  ``SyntheticFaceDataset``), so that the ``tiny`` preset needs no download;
* ``folder``: ``root/<identity>/<image>`` folders (``ImageFolderDataset``), plus ``collate_skip``;
* ``recordio``: insightface's MXNet ``train.rec`` / ``train.idx`` packs, without mxnet;
* ``pack``: decoded-face packs (``FacePack``, ``write_pack``, ``PackLoader``): decoded once, memory-mapped.
"""

from __future__ import annotations

from pathlib import Path

from engine.data.folder import IMAGE_EXTENSIONS, Batch, ImageFolderDataset, collate_skip, decode_image
from engine.data.pack import FacePack, PackLoader, PackSource, is_pack, write_pack
from engine.data.recordio import IRHeader, RecordIODataset, pack_payload, unpack_payload, write_recordio
from engine.data.synthetic import (
    GENERATOR_VERSION,
    SyntheticFaceDataset,
    SyntheticFaces,
    materialise,
    render_face,
)
from engine.errors import DatasetError

FORMATS = ("auto", "folder", "recordio", "pack")

__all__ = [
    "FORMATS",
    "GENERATOR_VERSION",
    "IMAGE_EXTENSIONS",
    "Batch",
    "FacePack",
    "PackLoader",
    "PackSource",
    "IRHeader",
    "ImageFolderDataset",
    "RecordIODataset",
    "SyntheticFaceDataset",
    "SyntheticFaces",
    "collate_skip",
    "decode_image",
    "is_pack",
    "materialise",
    "open_dataset",
    "pack_payload",
    "render_face",
    "unpack_payload",
    "write_recordio",
    "write_pack",
]


def open_dataset(path: Path | str, format: str = "auto", **kw) -> ImageFolderDataset | RecordIODataset | FacePack:
    """Open a face dataset at ``path``; ``kw`` (``on_error``, ``size``) go to the dataset class.

    ``auto`` picks RecordIO when ``path`` is a ``.rec`` file or a folder holding ``train.rec``, a pack when
    it holds a pack manifest, and an image folder otherwise. For RecordIO, ``path`` may be the folder or
    the ``.rec`` file itself. A pack holds images of one size: a ``size`` other than it is an error.
    """
    path = Path(path).expanduser()
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; choose one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")
    rec = path if path.is_file() else path / "train.rec"
    if format == "auto":
        format = ("recordio" if (path.is_file() and path.suffix == ".rec") or rec.is_file()
                  else "pack" if is_pack(path) else "folder")
    if format == "pack":
        pack = FacePack(path)
        if kw.get("size") not in (None, pack.size):
            raise DatasetError(f"face pack {path} holds {pack.size} px images, not {kw['size']} px: "
                               f"write a pack at that size with `lrfr data pack NAME --size {kw['size']}`")
        return pack
    if format == "recordio":
        if not rec.is_file():
            raise DatasetError(f"no RecordIO pack at {path}: expected {rec} and {rec.with_suffix('.idx')}")
        return RecordIODataset(rec, rec.with_suffix(".idx"), **kw)
    return ImageFolderDataset(path, **kw)
