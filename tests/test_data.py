"""engine.data: synthetic faces, image folders, RecordIO packs, open_dataset."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from engine.data import (
    GENERATOR_VERSION,
    Batch,
    ImageFolderDataset,
    RecordIODataset,
    SyntheticFaceDataset,
    SyntheticFaces,
    collate_skip,
    open_dataset,
    pack_payload,
    render_face,
    unpack_payload,
    write_recordio,
)
from engine.data.recordio import MAGIC
from engine.data.synthetic import _identity_layer
from engine.errors import DatasetError

ORL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "orl_faces"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)


# -- synthetic faces -------------------------------------------------------------------------------


def test_render_face_is_deterministic_and_varies():
    a = render_face(7, 3, 2)
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_face(7, 3, 2))
    _identity_layer.cache_clear()  # the identity cache must not change the picture
    assert np.array_equal(a, render_face(7, 3, 2))
    assert not np.array_equal(a, render_face(7, 3, 3)), "another sample of the same identity"
    assert not np.array_equal(a, render_face(7, 4, 2)), "another identity"
    assert not np.array_equal(a, render_face(8, 3, 2)), "another seed"
    assert render_face(0, 0, 0, size=64).shape == (64, 64, 3)


def test_render_face_rejects_bad_arguments():
    with pytest.raises(ValueError):
        render_face(0, -1, 0)
    with pytest.raises(ValueError):
        render_face(0, 0, 0, size=4)


def test_identities_are_closer_to_themselves_than_to_others():
    # Raw pixels of the face region, normalised per image against lighting: weak features, but an
    # identity's images must still be nearer each other than other identities' on average.
    n, m = 16, 5
    x = np.stack([render_face(1, i, s)[24:104, 24:88].astype(np.float32) for i in range(n) for s in range(m)])
    x = x.reshape(len(x), -1)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    d = ((x[:, None] - x[None]) ** 2).mean(-1)
    labels = np.repeat(np.arange(n), m)
    same = labels[:, None] == labels[None]
    intra = d[same & ~np.eye(len(x), dtype=bool)].mean()
    inter = d[~same].mean()
    assert intra < 0.85 * inter, (intra, inter)


def test_synthetic_dataset_matches_render_face():
    ds = SyntheticFaceDataset(num_identities=3, images_per_identity=4, seed=2, first_identity=10, size=48)
    assert len(ds) == 12 and ds.num_classes == 3
    image, label = ds[6]
    assert label == 1
    assert torch.equal(image, _chw(render_face(2, 11, 2, size=48)))
    with pytest.raises(IndexError):
        ds[12]


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_materialise_writes_folder_and_caches(tmp_path):
    faces = SyntheticFaces(size=32)
    root = tmp_path / "train"
    # Debris of an interrupted run: a temp dir with some images but no manifest. Must be ignored.
    stale = tmp_path / ".train.tmp-dead"
    (stale / "00005").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(stale / "00005" / "000.png")

    assert faces.materialise(root, num_identities=3, images_per_identity=2, seed=4, first_identity=5) == root
    assert sorted(p.name for p in root.iterdir()) == ["00005", "00006", "00007", "manifest.json"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == GENERATOR_VERSION and manifest["seed"] == 4
    assert manifest["num_identities"] == 3 and manifest["images_per_identity"] == 2
    # Only our own temp dir is cleaned up; nothing of ours is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".train.tmp-dead", "train"]

    ds = ImageFolderDataset(root, size=32)
    assert ds.classes == ["00005", "00006", "00007"] and len(ds) == 6
    image, label = ds[3]
    assert label == 1 and torch.equal(image, _chw(render_face(4, 6, 1, size=32)))

    before = _mtimes(root)
    faces.materialise(root, num_identities=3, images_per_identity=2, seed=4, first_identity=5)
    assert _mtimes(root) == before, "a complete matching cache must not be rewritten"

    # Other parameters replace the cache.
    faces.materialise(root, num_identities=2, images_per_identity=3, seed=4)
    assert sorted(p.name for p in root.iterdir()) == ["00000", "00001", "manifest.json"]
    assert len(ImageFolderDataset(root, size=32)) == 6


def test_materialise_regenerates_incomplete_cache(tmp_path):
    root = tmp_path / "faces"
    SyntheticFaces(size=24).materialise(root, 2, 2, seed=0)
    (root / "00001" / "001.png").unlink()  # someone deleted a file
    SyntheticFaces(size=24).materialise(root, 2, 2, seed=0)
    assert (root / "00001" / "001.png").is_file()
    (root / "manifest.json").unlink()  # a folder without a manifest is never trusted
    SyntheticFaces(size=24).materialise(root, 2, 2, seed=0)
    assert (root / "manifest.json").is_file()


# -- image folders ---------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    (root / "bob").mkdir(parents=True)
    (root / "alice").mkdir()
    (root / "carol_empty").mkdir()
    (root / ".hidden").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / "alice" / "b.png")
    Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(root / "alice" / "a.JPG")
    Image.fromarray(rng.integers(0, 255, (112, 92), dtype=np.uint8), "L").save(root / "bob" / "1.pgm")
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "bob" / ".DS_Store").write_bytes(b"junk")
    (root / "README").write_text("files at the top level are ignored")
    return root


def test_image_folder_labels_and_decoding(folder):
    ds = ImageFolderDataset(folder)
    assert ds.classes == ["alice", "bob"] and ds.num_classes == 2
    assert [(p.name, label) for p, label in ds.samples] == [("a.JPG", 0), ("b.png", 0), ("1.pgm", 1)]
    assert ds.empty_folders == ["carol_empty"]
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 112, 112)
        assert label == ds.samples[i][1]
    grey, _ = ds[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2]), "grey becomes 3 equal channels"
    # A PNG already at the target size is returned untouched.
    ds32 = ImageFolderDataset(folder, size=40)
    assert ds32[1][0].shape == (3, 40, 40)
    native = ImageFolderDataset(folder, size=None)
    b = np.asarray(Image.open(folder / "alice" / "b.png"))
    assert torch.equal(native[1][0], _chw(b))


def test_image_folder_corrupt_file(folder):
    bad = folder / "bob" / "2.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DatasetError, match=r"2\.jpg"):
        ImageFolderDataset(folder)[3]

    skipping = ImageFolderDataset(folder, on_error="skip")
    assert skipping[3] is None
    batch = collate_skip([skipping[i] for i in range(len(skipping))])
    assert isinstance(batch, Batch)
    assert batch.skipped == 1 and batch.images.shape == (3, 3, 112, 112)
    assert batch.labels.tolist() == [0, 0, 1]
    empty = collate_skip([None, None])
    assert empty.skipped == 2 and empty.images.shape[0] == 0 and empty.labels.shape == (0,)


def test_image_folder_errors_cross_dataloader_workers(folder):
    (folder / "bob" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    loader = DataLoader(ImageFolderDataset(folder), batch_size=4, num_workers=1, collate_fn=collate_skip)
    with pytest.raises(DatasetError, match=r"2\.png"):
        list(loader)
    loader = DataLoader(ImageFolderDataset(folder, on_error="skip"), batch_size=4, num_workers=1,
                        collate_fn=collate_skip)
    (batch,) = list(loader)
    assert batch.skipped == 1 and batch.images.shape[0] == 3


def test_image_folder_structure_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no identity sub-folders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "person").mkdir()
    with pytest.raises(DatasetError, match="<identity>/<image>"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError):
        ImageFolderDataset(tmp_path, on_error="ignore")


def test_orl_faces():
    if not ORL.is_dir():
        pytest.skip(f"ORL faces not present at {ORL}")
    ds = ImageFolderDataset(ORL)
    assert ds.num_classes == 40 and len(ds) == 400
    image, label = ds[0]
    assert image.shape == (3, 112, 112) and label == 0
    assert torch.equal(image[0], image[2])


# -- RecordIO --------------------------------------------------------------------------------------


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (24, 20, 3), dtype=np.uint8) for _ in range(n)]


def test_payload_round_trip():
    header, rest = unpack_payload(pack_payload(b"img", 5))
    assert (header.flag, header.label, header.identity, rest) == (0, (5.0,), 5, b"img")
    header, rest = unpack_payload(pack_payload(b"img", [3.0, 7.5], id=9))
    assert (header.flag, header.label, header.id, header.identity, rest) == (2, (3.0, 7.5), 9, 3, b"img")
    assert len(pack_payload(b"", 0)) == 24  # struct 'IfQQ' as mxnet packs it
    with pytest.raises(ValueError):
        unpack_payload(b"short")


def test_recordio_round_trip_with_header(tmp_path):
    imgs = _images(5)
    labels: list = [0, 0, 2, 1, [4.0, 0.5]]  # the last one is a multi-label (flag > 0) record
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    assert write_recordio(rec, idx, ((_png(a), y) for a, y in zip(imgs, labels, strict=True))) == 5
    keys = [int(line.split("\t")[0]) for line in idx.read_text().splitlines()]
    assert keys == [0, 1, 2, 3, 4, 5]

    ds = RecordIODataset(rec, size=None)
    assert len(ds) == 5, "record 0 is the header, not an image"
    assert ds.header is not None and ds.header.label == (6.0, 6.0)
    for i, a in enumerate(imgs):
        image, label = ds[i]
        assert torch.equal(image, _chw(a))
        assert label == [0, 0, 2, 1, 4][i]
    assert ds.labels.tolist() == [0, 0, 2, 1, 4] and ds.num_classes == 5
    assert ds[0][0].shape == (3, 24, 20)
    assert RecordIODataset(rec)[0][0].shape == (3, 112, 112)


def test_recordio_without_header_and_open_dataset(tmp_path):
    imgs = _images(3, seed=1)
    write_recordio(tmp_path / "train.rec", tmp_path / "train.idx", [(_png(a), 7) for a in imgs], with_header=False)
    assert [line.split("\t")[0] for line in (tmp_path / "train.idx").read_text().splitlines()] == ["0", "1", "2"]
    ds = open_dataset(tmp_path, size=None)
    assert isinstance(ds, RecordIODataset) and len(ds) == 3 and ds.header is None
    assert torch.equal(ds[2][0], _chw(imgs[2])) and ds[2][1] == 7
    assert isinstance(open_dataset(tmp_path / "train.rec"), RecordIODataset)
    (tmp_path / "property").write_text("1000,112,112\n")  # insightface's metadata file wins
    assert ds.num_classes == 1000


def test_recordio_splits_payloads_containing_the_magic_word(tmp_path):
    png = _png(_images(1)[0])
    # Pad so that the magic word lands at a 4-byte-aligned payload position (IRHeader is 24 bytes).
    pad = b"\0" * (-(24 + len(png)) % 4)
    image = png + pad + struct.pack("<I", MAGIC) + b"tail" + struct.pack("<I", MAGIC)
    rec, idx = tmp_path / "x.rec", tmp_path / "x.idx"
    write_recordio(rec, idx, [(image, 3), (png, 4)])
    raw = rec.read_bytes()
    flags = []
    pos = 0
    while pos < len(raw):
        magic, lrec = struct.unpack_from("<II", raw, pos)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        length = lrec & ((1 << 29) - 1)
        pos += 8 + length + (-length % 4)
    assert flags == [0, 1, 2, 3, 0], "header, image split in three parts, plain image"
    ds = RecordIODataset(rec, idx)
    assert ds.read_record(1, int(ds._offsets[0])) == pack_payload(image, 3)
    assert [ds[i][1] for i in range(2)] == [3, 4]


def _pack(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    write_recordio(rec, idx, [(_png(a), i) for i, a in enumerate(_images(n))])
    return rec, idx


def test_recordio_truncated_and_garbage(tmp_path):
    rec, idx = _pack(tmp_path)
    data = rec.read_bytes()
    last = int(idx.read_text().splitlines()[-1].split("\t")[1])
    rec.write_bytes(data[: last + 40])  # cut inside the last record
    ds = RecordIODataset(rec)
    assert ds[2][1] == 2
    with pytest.raises(DatasetError, match=rf"train\.rec.*key 4 at offset {last}.*truncated"):
        ds[3]
    assert RecordIODataset(rec, on_error="skip")[3] is None

    rec.write_bytes(data[: last - 4])  # the index now points past the end
    with pytest.raises(DatasetError, match="points past the end"):
        RecordIODataset(rec)

    first = int(idx.read_text().splitlines()[1].split("\t")[1])
    rec.write_bytes(data[:first] + b"\0" * 8 + data[first + 8:])  # clobber a record header
    with pytest.raises(DatasetError, match=rf"key 1 at offset {first}: bad magic"):
        RecordIODataset(rec)[0]

    idx.write_text("0\t0\n1\tnot-a-number\n")
    with pytest.raises(DatasetError, match="line 2"):
        RecordIODataset(rec)


def test_recordio_header_must_match_index(tmp_path):
    rec, idx = _pack(tmp_path)
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines[:-1]) + "\n")  # drop the last image from the index
    with pytest.raises(DatasetError, match=r"keys 1\.\.4"):
        RecordIODataset(rec)
    with pytest.raises(DatasetError, match="does not exist"):
        RecordIODataset(tmp_path / "missing.rec")


def test_recordio_pickles_and_works_in_workers(tmp_path):
    rec, _ = _pack(tmp_path, n=8)
    ds = RecordIODataset(rec, size=32)
    ds[0]  # open the file in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[5][0], ds[5][0])
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skip)
    labels = torch.cat([b.labels for b in loader])
    assert labels.tolist() == list(range(8))


def test_open_dataset_choices(folder, tmp_path):
    assert isinstance(open_dataset(folder), ImageFolderDataset)
    with pytest.raises(DatasetError, match="unknown dataset format"):
        open_dataset(folder, format="lmdb")
    with pytest.raises(DatasetError, match="no RecordIO pack"):
        open_dataset(folder, format="recordio")
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    assert os.fspath(open_dataset(folder, format="folder", on_error="skip").root) == os.fspath(folder)
