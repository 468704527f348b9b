"""Decoded-face packs: bit-exact against the source images, atomic, checked, read by the trainer unchanged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.catalog import load_catalog, register, set_pack
from engine.config import resolve
from engine.data import FacePack, PackLoader, PackSource, open_dataset, write_pack, write_recordio
from engine.data.check import check_dataset
from engine.data.pack import IMAGES, LABELS, MANIFEST, pack_entry
from engine.errors import DatasetError
from engine.reporting import Reporter
from engine.train import DistEnv, EpochBatchSampler, train
from tests.conftest import MICRO_OVERRIDES


def _faces(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    """3 identities x 3 JPEG faces (lossy: what PIL decodes is the reference, not the array written)."""
    root = tmp_path / "faces"
    for ident, faces in enumerate(_faces(3, 32, s) for s in range(3)):
        (root / f"id{ident}").mkdir(parents=True)
        for k, face in enumerate(faces):
            Image.fromarray(face).save(root / f"id{ident}" / f"{k}.jpg", quality=90)
    Image.fromarray(_faces(1, 40)[0]).convert("L").save(root / "id2" / "grey.png")  # grey and not 32 px
    return root


def _pil_reference(path: Path, size: int) -> np.ndarray:
    """Independent of engine.data: PIL's RGB decode, resized like the readers (bicubic) when not square-size."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im)


def test_pack_round_trip_is_bit_exact_against_the_source_images(jpeg_folder, tmp_path):
    files = sorted(jpeg_folder.glob("*/*"))
    pack = write_pack(open_dataset(jpeg_folder, size=32), tmp_path / "p", PackSource("faces", str(jpeg_folder), "folder"),
                      32)
    pack = FacePack(pack)
    assert len(pack) == len(files) == 10 and pack.num_classes == 3 and pack.size == 32
    assert pack.manifest["classes"] == ["id0", "id1", "id2"]
    assert pack.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    for i, path in enumerate(files):
        assert np.array_equal(np.asarray(pack.images[i]), _pil_reference(path, 32)), path
        image, label = pack[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert np.array_equal(image.permute(1, 2, 0).numpy(), _pil_reference(path, 32))
    manifest = json.loads((tmp_path / "p" / MANIFEST).read_text())
    assert manifest["count"] == 10 and manifest["source"] == {"name": "faces", "path": str(jpeg_folder),
                                                               "format": "folder"}
    assert (tmp_path / "p" / IMAGES).stat().st_size == 10 * 32 * 32 * 3
    assert pack.verify() == []


def test_pack_from_recordio_matches_the_records(tmp_path):
    faces = _faces(6, 32, seed=4)
    encoded = []
    for face in faces:
        buf = io.BytesIO()
        Image.fromarray(face).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    write_recordio(tmp_path / "train.rec", tmp_path / "train.idx", zip(encoded, [0, 0, 1, 1, 2, 2], strict=True))
    pack = pack_entry("rec", tmp_path, "recordio", tmp_path / "rec.pack", size=32, num_workers=0)
    assert pack.labels == [0, 0, 1, 1, 2, 2]
    assert all(np.array_equal(np.asarray(pack.images[i]), faces[i]) for i in range(6))  # PNG: lossless


def test_pack_loader_batches_follow_the_sampler(jpeg_folder, tmp_path):
    source = open_dataset(jpeg_folder, size=32)
    pack = FacePack(write_pack(source, tmp_path / "p", PackSource("f", str(jpeg_folder), "folder"), 32))
    sampler = EpochBatchSampler(len(pack), 3, seed=5, epoch=1, env=DistEnv())
    for workers in (1, 3):
        batches = list(PackLoader(pack, sampler, workers=workers, prefetch=2))
        assert len(batches) == len(sampler) == 3
        for (images, labels, skipped), indices in zip(batches, sampler, strict=True):
            expected = torch.stack([source[i][0] for i in indices])
            assert skipped == 0 and torch.equal(images, expected) and labels.tolist() == [source.labels[i]
                                                                                         for i in indices]


def test_unreadable_images_are_listed_or_refused(jpeg_folder, tmp_path):
    (jpeg_folder / "id1" / "9.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="9.jpg"):
        pack_entry("f", jpeg_folder, "folder", tmp_path / "p", size=32, num_workers=0)
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.tmp-*"))  # nothing half-written
    pack = pack_entry("f", jpeg_folder, "folder", tmp_path / "p", size=32, num_workers=0, skip_unreadable=True)
    assert len(pack) == 10 and pack.manifest["skipped"] == [str(jpeg_folder / "id1" / "9.jpg")]


def test_a_changed_or_truncated_pack_is_found(jpeg_folder, tmp_path):
    root = write_pack(open_dataset(jpeg_folder, size=32), tmp_path / "p", PackSource("f", str(jpeg_folder), "folder"),
                      32)
    with open(root / IMAGES, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01")
    register("faces_pack", root)  # guessed: a pack
    report = check_dataset(load_catalog()["faces_pack"])
    assert report.format == "pack" and not report.ok and "images.u8: checksum" in report.problems[0]
    with open(root / LABELS, "r+b") as fh:
        fh.truncate(8)
    with pytest.raises(DatasetError, match="labels.i64 holds 8 bytes"):
        FacePack(root)


def test_catalog_entry_points_at_its_pack_and_the_readers_choose(jpeg_folder, tmp_path):
    from engine.sources import build_train_dataset

    register("faces", jpeg_folder)
    cfg = resolve("tiny", MICRO_OVERRIDES + ["data.dataset=faces"])
    assert type(build_train_dataset(cfg)).__name__ == "ImageFolderDataset"
    with pytest.raises(DatasetError, match="has no face pack; write one with `lrfr data pack faces`"):
        build_train_dataset(resolve("tiny", MICRO_OVERRIDES + ["data.dataset=faces", "data.reader=pack"]))
    pack = pack_entry("faces", jpeg_folder, "folder", tmp_path / "p", size=32, num_workers=0)
    set_pack("faces", pack.root)
    assert isinstance(build_train_dataset(cfg), FacePack)
    decode = resolve("tiny", MICRO_OVERRIDES + ["data.dataset=faces", "data.reader=decode"])
    assert type(build_train_dataset(decode)).__name__ == "ImageFolderDataset"
    wrong_size = resolve("tiny", MICRO_OVERRIDES + ["data.dataset=faces", "model.input_size=48"])
    assert type(build_train_dataset(wrong_size)).__name__ == "ImageFolderDataset"  # auto: decodes instead
    with pytest.raises(DatasetError, match="holds 32 px images, not 48 px"):
        build_train_dataset(resolve("tiny", MICRO_OVERRIDES + ["data.dataset=faces", "model.input_size=48",
                                                               "data.reader=pack"]))


class _Points(Reporter):
    def __init__(self) -> None:
        self.points: list[dict] = []

    def metrics(self, step, values):
        self.points.append({k: v for k, v in values.items() if k.startswith("loss")})


def test_trainer_on_a_pack_takes_the_same_steps_as_on_its_folder(tmp_path):
    """Same losses at every step and the same final weights, bit for bit: the pack changes how, not what."""
    from engine.sources import synthetic_train_root

    steps = MICRO_OVERRIDES + ["schedule.max_steps=4"]
    runs = {}
    for reader in ("decode", "pack"):
        rec = _Points()
        result = train(resolve("tiny", steps + [f"data.reader={reader}"]), tmp_path / reader, rec)
        runs[reader] = (rec.points, result.backbone.state_dict())
    assert (synthetic_train_root(resolve("tiny", steps)).with_name(
        synthetic_train_root(resolve("tiny", steps)).name + ".pack") / MANIFEST).is_file()
    (decoded, w_decoded), (packed, w_packed) = runs["decode"], runs["pack"]
    assert len(decoded) == 4 and decoded == packed
    assert all(torch.equal(w_decoded[k], w_packed[k]) for k in w_decoded)


def test_batched_jpeg_decoding_matches_pil(jpeg_folder):
    """gpu_decode's batch decoder, run here on the CPU (torchvision's libjpeg path; nvJPEG on CUDA): JPEGs
    decoded in one call, the grey PNG by PIL in the worker, a broken file named or skipped."""
    from engine.data.gpu_decode import EncodedFaces, collate_encoded, decode_batch

    folder = open_dataset(jpeg_folder, size=32)
    encoded = EncodedFaces(folder)
    items, dropped = collate_encoded([encoded[i] for i in range(len(encoded))])
    assert dropped == 0 and sum(item.jpeg for item in items) == 9
    images, labels, skipped = decode_batch(items, 32, "cpu")
    reference = torch.stack([folder[i][0] for i in range(len(folder))])
    assert skipped == 0 and images.shape == reference.shape and labels.tolist() == folder.labels
    assert (images.int() - reference.int()).abs().max() <= 2  # decoders may differ in the last bits
    (jpeg_folder / "id0" / "0.jpg").write_bytes(b"\xff\xd8\xff broken")
    broken = [EncodedFaces(open_dataset(jpeg_folder, size=32))[i] for i in range(3)]
    with pytest.raises(DatasetError, match="0.jpg"):
        decode_batch(broken, 32, "cpu")
    images, _, skipped = decode_batch(broken, 32, "cpu", on_error="skip")
    assert skipped == 1 and len(images) == 2
