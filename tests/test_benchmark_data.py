"""Benchmark readers on the real file formats (.bin, pairs.txt trees, SCface, TinyFace) and the stand-ins."""

from __future__ import annotations

import csv
import io
import os
import pickle
import pickletools
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from engine.data.binpack import load_bin, read_bin, write_bin
from engine.data.folder import ImageFolderDataset, decode_image
from engine.data.pairs import (
    PairEntry,
    VerificationPairs,
    load_pairs_tree,
    parse_pairs,
    read_pairs,
    write_pairs,
)
from engine.data.scface import (
    MUGSHOT_RE,
    PROBE_RE,
    load_scface,
    mugshot_name,
    probe_name,
    scan_scface,
    split_ids,
)
from engine.data.standins import (
    COMPLETE_MARKER,
    LFW_PAIRS,
    XQLFW_PAIRS,
    lfw_pairs,
    materialise_standins,
    write_scface_tree,
    write_tinyface_tree,
)
from engine.data.synthetic import render_face
from engine.data.tinyface import (
    DISTRACTOR_LABEL,
    TinyFaceSplit,
    load_tinyface,
    parse_label,
    tinyface_splits,
    training_root,
)
from engine.errors import DatasetError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCFACE_TSV = SHARED / "protocols" / "scface_protocols.tsv"


def jpeg_bytes(identity: int, sample: int = 0, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render_face(0, identity, sample, size)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    return materialise_standins(tmp_path_factory.mktemp("standins"), seed=3, size_preset="test")


# ---------------------------------------------------------------------------------------------- pairs.txt


def make_tree(root: Path, names: dict[str, int]) -> None:
    for k, (name, count) in enumerate(names.items()):
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            (root / name / f"{name}_{n:04d}.jpg").write_bytes(jpeg_bytes(10 * k, n))


TREE = {"Ann_A": 3, "Bob_B": 2, "Cid_C": 2, "Dee_D": 1}
ENTRIES = [  # 2 folds x (1 matched + 1 mismatched)
    PairEntry.matched("Ann_A", 1, 2),
    PairEntry.mismatched("Ann_A", 3, "Dee_D", 1),
    PairEntry.matched("Bob_B", 2, 1),
    PairEntry.mismatched("Cid_C", 1, "Bob_B", 2),
]


def test_pairs_round_trip(tmp_path):
    make_tree(tmp_path / "lfw", TREE)
    pairs = write_pairs(tmp_path / "pairs.txt", 2, 1, ENTRIES)
    assert pairs.read_text().splitlines()[:2] == ["2\t1", "Ann_A\t1\t2"]  # LFW's tab-separated layout
    folds, per_fold, entries = parse_pairs(pairs)
    assert (folds, per_fold) == (2, 1)
    assert [(e.name_a, e.n_a, e.name_b, e.n_b, e.same) for e in entries] == [
        (e.name_a, e.n_a, e.name_b, e.n_b, e.same) for e in ENTRIES]
    assert [e.line for e in entries] == [2, 3, 4, 5]
    vp = load_pairs_tree(tmp_path / "lfw", pairs, size=24)
    assert isinstance(vp, VerificationPairs)
    assert vp.images.shape == (8, 3, 24, 24) and vp.images.dtype == torch.uint8
    assert vp.issame.tolist() == [True, False, True, False] and vp.folds == 2 and vp.name == "lfw"
    assert vp.num_pairs == 4 and vp.first.shape == vp.second.shape == (4, 3, 24, 24)
    # pair i is images[2i], images[2i + 1], in file order
    cid1 = tmp_path / "lfw/Cid_C/Cid_C_0001.jpg"
    assert torch.equal(vp.images[6], decode_image(cid1, 24, "x"))
    assert torch.equal(vp.images[4], vp.images[7])  # both are Bob_B 2 (decoded once)
    assert not torch.equal(vp.images[4], vp.images[5])


def test_pairs_single_number_header_spaces_and_blank_lines(tmp_path):
    make_tree(tmp_path, TREE)
    text = "2\n Ann_A  1   2 \nBob_B\t1\t2\n\nAnn_A 1 Bob_B 1\nCid_C 2 Dee_D 1\n\n"
    (tmp_path / "pairsDevTest.txt").write_text(text)
    folds, per_fold, entries = parse_pairs(tmp_path / "pairsDevTest.txt")
    assert (folds, per_fold, len(entries)) == (1, 2, 4)
    assert entries[2].line == 5  # blank lines still count
    vp = load_pairs_tree(tmp_path, tmp_path / "pairsDevTest.txt", size=16)
    assert vp.folds == 1 and vp.issame.tolist() == [True, True, False, False]


@pytest.mark.parametrize("bad", ["Ann_A 1", "Ann_A x 2", "Ann_A 0 2", "Ann_A 1 2 Bob_B 3", "../etc 1 2",
                                 "Ann_A -1 Bob_B 2", "Ann_A 1 Bob_B"])
def test_pairs_malformed_line_names_file_line_and_content(tmp_path, bad):
    path = tmp_path / "pairs.txt"
    path.write_text(f"1\t2\nAnn_A\t1\t2\n{bad}\nAnn_A\t1\tBob_B\t1\nAnn_A\t2\tBob_B\t2\n")
    with pytest.raises(DatasetError) as err:
        read_pairs(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and bad in msg


@pytest.mark.parametrize("header", ["", "ten 300", "10 300 4", "0 3", "10 x"])
def test_pairs_bad_header(tmp_path, header):
    path = tmp_path / "pairs.txt"
    path.write_text(f"{header}\nAnn_A 1 2\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_pairs(path)


def test_pairs_count_disagrees_with_header(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\t1\nAnn_A 1 2\nAnn_A 1 Bob_B 1\nBob_B 1 2\n")  # header says 4 pairs, 3 given
    with pytest.raises(DatasetError) as err:
        read_pairs(path)
    assert str(path) in str(err.value) and "4 pairs" in str(err.value) and "3 pair lines" in str(err.value)


def test_pairs_fold_layout_is_checked(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1\t2\nAnn_A 1 2\nAnn_A 1 Bob_B 1\nBob_B 1 2\nCid_C 1 Bob_B 1\n")
    with pytest.raises(DatasetError, match=r"line 3: expected a matched pair"):
        read_pairs(path)


def test_pairs_missing_image_names_pairs_file_line_and_image(tmp_path):
    make_tree(tmp_path / "lfw", TREE)
    path = tmp_path / "pairs.txt"
    path.write_text("1\t1\nAnn_A 1 2\nDee_D 2 Bob_B 1\n")
    with pytest.raises(DatasetError) as err:
        load_pairs_tree(tmp_path / "lfw", path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "Dee_D_0002.jpg" in msg


def test_pairs_missing_file_and_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")
    (tmp_path / "pairs.txt").write_text("1\t1\nA 1 2\nA 1 B 1\n")
    with pytest.raises(DatasetError, match="image tree"):
        load_pairs_tree(tmp_path / "no-tree", tmp_path / "pairs.txt")


def test_pairs_other_extension_is_found(tmp_path):
    make_tree(tmp_path, {"Ann_A": 2, "Bob_B": 1})
    jpg = tmp_path / "Bob_B/Bob_B_0001.jpg"
    Image.open(jpg).save(jpg.with_suffix(".png"))
    jpg.unlink()
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A 1 2\nAnn_A 1 Bob_B 1\n")
    assert load_pairs_tree(tmp_path, tmp_path / "pairs.txt", size=16).images.shape == (4, 3, 16, 16)


def test_write_pairs_rejects_bad_layout(tmp_path):
    with pytest.raises(ValueError):
        write_pairs(tmp_path / "p.txt", 1, 1, [ENTRIES[1], ENTRIES[0]])
    with pytest.raises(ValueError):
        write_pairs(tmp_path / "p.txt", 2, 1, ENTRIES[:2])


# ---------------------------------------------------------------------------------------------- .bin packs


def py2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's ``pickle.dump((bins, issame), f, protocol=2)`` writes: images as Python-2 ``str``."""
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += b"]("  # EMPTY_LIST, MARK
    for b in bins:
        out += b"T" + struct.pack("<I", len(b)) + b  # BINSTRING (a Python-2 str)
    out += b"e]("  # APPENDS, EMPTY_LIST, MARK
    out += b"".join(b"\x88" if s else b"\x89" for s in issame)  # NEWTRUE / NEWFALSE
    out += b"e\x86."  # APPENDS, TUPLE2, STOP
    return bytes(out)


BIN_IMAGES = [jpeg_bytes(i, s) for i, s in ((1, 0), (1, 1), (2, 0), (3, 0))]


def test_bin_round_trip(tmp_path):
    path = write_bin(tmp_path / "lfw.bin", BIN_IMAGES, [True, False])
    vp = load_bin(path, size=28)
    assert vp.name == "lfw" and vp.folds == 10
    assert vp.images.shape == (4, 3, 28, 28)
    assert vp.issame.dtype == bool and vp.issame.tolist() == [True, False]
    for i, raw in enumerate(BIN_IMAGES):
        assert torch.equal(vp.images[i], decode_image(raw, 28, "x"))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_bin_numpy_images_and_protocols(tmp_path, protocol):
    bins = [np.frombuffer(b, dtype=np.uint8).copy() for b in BIN_IMAGES]
    issame = np.array([False, True])
    (tmp_path / "cfp_fp.bin").write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    encoded, same = read_bin(tmp_path / "cfp_fp.bin")
    assert encoded == BIN_IMAGES and same.tolist() == [False, True]
    assert load_bin(tmp_path / "cfp_fp.bin", size=16).images.shape == (4, 3, 16, 16)


def test_bin_python2_pickle(tmp_path):
    data = py2_pickle(BIN_IMAGES, [True, False])
    pickletools.dis(data, out=io.StringIO())  # a well-formed pickle...
    with pytest.raises(UnicodeDecodeError):  # ...that Python 3's default decoding cannot read
        pickle.loads(data)
    (tmp_path / "agedb_30.bin").write_bytes(data)
    vp = load_bin(tmp_path / "agedb_30.bin", size=20)
    assert vp.issame.tolist() == [True, False] and vp.name == "agedb_30"
    assert torch.equal(vp.images[2], decode_image(BIN_IMAGES[2], 20, "x"))


def py2_numpy_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """Python 2 + numpy 1's protocol-2 pickle of ``(list of uint8 arrays, issame)``, opcode by opcode."""

    def string(b: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def array(data: bytes) -> bytes:
        out = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
        out += b"(K\x01J" + struct.pack("<i", len(data)) + b"\x85"  # state: version, shape
        out += b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"  # dtype('u1')
        out += b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # dtype state
        return out + b"\x89" + string(data) + b"tb"  # not Fortran order, raw data

    body = b"".join(array(b) for b in bins)
    return b"\x80\x02](" + body + b"e](" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86."


def test_bin_python2_numpy_pickle(tmp_path):
    (tmp_path / "old.bin").write_bytes(py2_numpy_pickle(BIN_IMAGES, [False, True]))
    encoded, same = read_bin(tmp_path / "old.bin")
    assert encoded == BIN_IMAGES and same.tolist() == [False, True]


def test_bin_python3_protocol2_bytes(tmp_path):
    # Python 3 pickles bytes at protocol <= 2 through _codecs.encode: the restricted unpickler must allow it.
    write_bin(tmp_path / "p2.bin", BIN_IMAGES, [True, True], protocol=2)
    assert load_bin(tmp_path / "p2.bin", size=16).issame.tolist() == [True, True]


def test_bin_odd_image_count(tmp_path):
    (tmp_path / "bad.bin").write_bytes(pickle.dumps((BIN_IMAGES[:3], [True, False])))
    with pytest.raises(DatasetError) as err:
        load_bin(tmp_path / "bad.bin")
    msg = str(err.value)
    assert "bad.bin" in msg and "3 images" in msg and "2 pairs" in msg


def test_bin_undecodable_image_names_file_and_index(tmp_path):
    bins = [BIN_IMAGES[0], b"not a jpeg", BIN_IMAGES[2], BIN_IMAGES[3]]
    (tmp_path / "x.bin").write_bytes(pickle.dumps((bins, [True, False])))
    with pytest.raises(DatasetError) as err:
        load_bin(tmp_path / "x.bin", size=16)
    assert "x.bin" in str(err.value) and "#1" in str(err.value)


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


def test_bin_bad_files(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DatasetError, match="junk.bin"):
        load_bin(tmp_path / "junk.bin")
    with pytest.raises(DatasetError, match="does not exist"):
        load_bin(tmp_path / "missing.bin")
    (tmp_path / "dict.bin").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DatasetError, match="dict.bin"):
        load_bin(tmp_path / "dict.bin")
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_Sneaky(), BIN_IMAGES[0]], [True])))
    with pytest.raises(DatasetError, match="refusing"):
        load_bin(tmp_path / "evil.bin")
    (tmp_path / "types.bin").write_bytes(pickle.dumps(([1, 2], [True])))
    with pytest.raises(DatasetError, match="image #0"):
        load_bin(tmp_path / "types.bin")


# ---------------------------------------------------------------------------------------------- SCface


@pytest.fixture
def scface_tree(tmp_path) -> Path:
    return write_scface_tree(tmp_path / "scface", num_subjects=3, seed=1)


def test_scface_reads_visible_cameras_only(scface_tree):
    found = scan_scface(scface_tree, expected_subjects=3)
    assert found.infrared_skipped == 3 * 2 * 3  # cam6 and cam7 at 3 distances, 3 subjects
    data = load_scface(scface_tree, size=32, expected_subjects=3)
    assert data.gallery_images.shape == (3, 3, 32, 32)
    assert data.gallery_ids.tolist() == [1, 2, 3]
    assert data.gallery_files[0].name == "001_frontal.JPG"
    assert sorted(data.probes) == [1, 2, 3]
    for d, (images, ids, cams) in data.probes.items():
        assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8
        assert ids.tolist() == [s for s in (1, 2, 3) for _ in range(5)]
        assert cams.tolist() == [1, 2, 3, 4, 5] * 3
        assert all(f.name.endswith(f"_{d}.jpg") for f in data.probe_files[d])
    sub = data.select([2])
    assert sub.gallery_ids.tolist() == [2] and sub.probes[1].ids.tolist() == [2] * 5
    assert sub.probes[1].images.shape[0] == 5


def test_scface_expects_130_subjects_by_default(scface_tree):
    with pytest.raises(DatasetError, match="3 subjects found, 130 expected"):
        load_scface(scface_tree)


def test_scface_missing_mugshot_and_probes(scface_tree):
    (scface_tree / "mugshot_frontal_cropped_all/002_frontal.JPG").unlink()
    (scface_tree / "surveillance_cameras_distance_1/cam_4/003_cam4_1.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        load_scface(scface_tree, expected_subjects=3)
    msg = str(err.value)
    assert "1 mugshot(s) missing" in msg and "002_frontal.JPG" in msg
    assert "1 surveillance image(s) missing" in msg and "003_cam4_1.jpg" in msg
    data = load_scface(scface_tree, size=16, expected_subjects=None, check=False)
    assert data.gallery_ids.tolist() == [1, 3]
    assert 2 not in data.probes[1].ids and len(data.probes[1].ids) == 9 and len(data.probes[2].ids) == 10


def test_scface_flat_layout_lowercase_and_duplicates(scface_tree, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in scface_tree.rglob("*.*"):
        shutil.copy(f, flat / f.name.replace(".JPG", ".jpg"))
    # the distribution also ships every surveillance shot in one folder, and uncropped mugshots
    shutil.copytree(flat, flat / "surveillance_cameras_all")
    (flat / "mugshot_frontal_original_all").mkdir()
    Image.new("RGB", (40, 50), "red").save(flat / "mugshot_frontal_original_all/001_frontal.JPG")
    (flat / "mugshot_frontal_cropped_all").mkdir()
    shutil.copy(flat / "001_frontal.jpg", flat / "mugshot_frontal_cropped_all/001_frontal.JPG")
    data = load_scface(flat, size=16, expected_subjects=3)
    assert data.gallery_ids.tolist() == [1, 2, 3] and all(len(p.ids) == 15 for p in data.probes.values())
    assert "cropped" in str(data.gallery_files[0])


def test_scface_empty_or_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_scface(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no SCface images"):
        load_scface(tmp_path)


def test_split_ids():
    ids = np.arange(1, 131)
    train, test = split_ids(ids, n_train=50, seed=7)
    assert len(train) == 50 and len(test) == 80
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(ids.tolist())
    again = split_ids(np.concatenate([ids[::-1], ids]), n_train=50, seed=7)  # order and repeats do not matter
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(split_ids(ids, 50, seed=8)[0], train)
    with pytest.raises(DatasetError, match="only 20 subjects"):
        split_ids(np.arange(20), n_train=50)


def test_scface_names_match_bob_db_protocol_file(tmp_path):
    if not SCFACE_TSV.is_file():
        pytest.skip(f"{SCFACE_TSV} is not present")
    with SCFACE_TSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows
    paths = set()
    for row in rows:
        subject, camera, distance = int(row["client_id"]), row["camera"], int(row["distance"])
        if camera == "frontal":
            name = row["path"] + ".JPG"
            assert name == mugshot_name(subject)
            m = MUGSHOT_RE.match(Path(name).name)
            assert m and int(m.group(1)) == subject
        else:
            assert camera in {f"cam{c}" for c in range(1, 6)}, row  # the tsv lists visible cameras only
            name = row["path"] + ".jpg"
            assert name == probe_name(subject, int(camera[3:]), distance)
            m = PROBE_RE.match(Path(name).name)
            assert m
            assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (subject, int(camera[3:]), distance)
        paths.add(name)
    # A tree with exactly these files (plus infrared shots) is the complete real set for the reader.
    tiny = jpeg_bytes(5, size=8)
    for name in paths:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(tiny)
    (tmp_path / "surveillance_cameras_IR").mkdir()
    (tmp_path / "surveillance_cameras_IR/001_cam6_1.jpg").write_bytes(tiny)
    data = load_scface(tmp_path, size=8)
    assert len(data.gallery_ids) == 130 and all(len(p.ids) == 650 for p in data.probes.values())


# ---------------------------------------------------------------------------------------------- TinyFace


def test_tinyface_parse_label():
    assert parse_label("1_3.jpg") == 1
    assert parse_label(Path("x/123_45_6.png")) == 123
    assert parse_label("17.jpg") == 17
    for bad in ("abc_1.jpg", "_1.jpg", "x.jpg", "-3_1.jpg"):
        with pytest.raises(DatasetError, match=bad.replace(".", r"\.")):
            parse_label(bad)


@pytest.fixture
def tiny_tree(tmp_path) -> Path:
    return write_tinyface_tree(tmp_path / "tinyface", num_probe_ids=5, distractors=12, train_ids=2, seed=2,
                               train_images_per_id=2)


def test_tinyface_load_and_distractors(tiny_tree):
    data = load_tinyface(tiny_tree, size=24)
    probes = sorted((tiny_tree / "Testing_Set/Probe").iterdir())
    matches = sorted((tiny_tree / "Testing_Set/Gallery_Match").iterdir())
    assert data.probe_images.shape == (len(probes), 3, 24, 24)
    assert data.probe_labels.tolist() == [int(p.name.split("_")[0]) for p in probes]
    assert set(data.probe_labels.tolist()) == {1, 2, 3, 4, 5}
    n_match = len(matches)
    assert data.gallery_images.shape == (n_match + 12, 3, 24, 24)
    assert data.gallery_labels[:n_match].tolist() == [int(p.name.split("_")[0]) for p in matches]
    # distractor names start with integers that look like probe labels; they must still never match
    assert data.gallery_labels[n_match:].tolist() == [DISTRACTOR_LABEL] * 12 and data.num_distractors == 12
    assert all(f.name[0].isdigit() for f in data.gallery_files[n_match:])
    only = load_tinyface(tiny_tree, size=16, which=("probe",))
    assert only.gallery_images.shape == (0, 3, 16, 16) and len(only.probe_labels) == len(probes)


def test_tinyface_lazy_split_streams_with_a_dataloader(tiny_tree):
    splits = tinyface_splits(tiny_tree, size=20)
    assert set(splits) == {"probe", "match", "distractor"}
    dist = splits["distractor"]
    assert isinstance(dist, TinyFaceSplit) and len(dist) == 12
    batches = list(DataLoader(dist, batch_size=5))
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    assert batches[0][0].shape[1:] == (3, 20, 20) and batches[0][0].dtype == torch.uint8
    assert batches[0][1].tolist() == [-1] * 5
    image, label = splits["probe"][0]
    assert image.shape == (3, 20, 20) and label == splits["probe"].labels[0]


def test_tinyface_bad_names_and_layouts(tiny_tree, tmp_path):
    bad = tiny_tree / "Testing_Set/Probe/face_1.jpg"
    shutil.copy(next((tiny_tree / "Testing_Set/Probe").iterdir()), bad)
    with pytest.raises(DatasetError, match="face_1.jpg"):
        load_tinyface(tiny_tree)
    bad.unlink()
    # distractors in sub-folders (as some re-distributions keep them) are found
    sub = tiny_tree / "Testing_Set/Gallery_Distractor/1_1_face"
    sub.mkdir()
    shutil.move(tiny_tree / "Testing_Set/Gallery_Distractor/1_1_face1.jpg", sub / "1_1_face1.jpg")
    assert len(tinyface_splits(tiny_tree)["distractor"]) == 12
    # splits directly under the root (aligned re-distributions) work too
    flat = tmp_path / "aligned"
    shutil.copytree(tiny_tree / "Testing_Set", flat)
    assert len(tinyface_splits(flat, which=("match",))["match"]) > 0
    with pytest.raises(DatasetError, match="not a TinyFace tree"):
        load_tinyface(tmp_path / "tinyface" / "Training_Set")
    with pytest.raises(ValueError):
        load_tinyface(tiny_tree, which=("gallery",))


def test_tinyface_probe_without_match_and_memory_guard(tiny_tree):
    for f in (tiny_tree / "Testing_Set/Gallery_Match").glob("3_*.jpg"):
        f.unlink()
    with pytest.raises(DatasetError, match="1 probe identities have no image in Gallery_Match"):
        load_tinyface(tiny_tree)
    with pytest.raises(DatasetError, match="tinyface_splits"):
        load_tinyface(tiny_tree, which=("distractor",), max_bytes=1000)


def test_tinyface_training_root(tiny_tree, tmp_path):
    train = training_root(tiny_tree)
    ds = ImageFolderDataset(train, size=16)
    assert ds.num_classes == 2 and len(ds) == 4
    with pytest.raises(DatasetError, match="Training_Set"):
        training_root(tmp_path)


# ---------------------------------------------------------------------------------------------- stand-ins


def test_standins_are_read_by_the_real_readers(standins):
    assert set(standins) == {"lfw", "lfw_bin", "xqlfw", "scface", "tinyface"}
    lfw = load_pairs_tree(standins["lfw"], standins["lfw"] / LFW_PAIRS, size=32)
    assert lfw.num_pairs == 60 and lfw.folds == 10
    assert lfw.issame.reshape(10, 6).tolist() == [[True] * 3 + [False] * 3] * 10  # LFW's per-fold layout
    packed = load_bin(standins["lfw_bin"], size=32)
    assert torch.equal(packed.images, lfw.images) and np.array_equal(packed.issame, lfw.issame)
    xq = load_pairs_tree(standins["xqlfw"], standins["xqlfw"] / XQLFW_PAIRS, size=32)
    assert np.array_equal(xq.issame, lfw.issame)
    # XQLFW is cross-quality: in every pair one image is the LFW stand-in's own (sharp) file and the
    # other a degraded copy.
    for line in (standins["xqlfw"] / XQLFW_PAIRS).read_text().splitlines()[1:]:
        f = line.split("\t")
        imgs = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]
        same = [(standins["xqlfw"] / n / f"{n}_{int(k):04d}.jpg").read_bytes()
                == (standins["lfw"] / n / f"{n}_{int(k):04d}.jpg").read_bytes() for n, k in imgs]
        assert same.count(True) == 1, line
    sc = load_scface(standins["scface"], size=32, expected_subjects=6)
    assert len(sc.gallery_ids) == 6 and {d: len(p.ids) for d, p in sc.probes.items()} == {1: 30, 2: 30, 3: 30}
    tf = load_tinyface(standins["tinyface"], size=16)
    assert set(tf.probe_labels.tolist()) == set(range(1, 9)) and tf.num_distractors == 20
    assert ImageFolderDataset(training_root(standins["tinyface"]), size=16).num_classes == 4


def test_standin_native_resolutions(standins):
    scface = standins["scface"]
    sizes = {d: Image.open(scface / f"surveillance_cameras_distance_{d}/cam_1/001_cam1_{d}.jpg").size[0]
             for d in (1, 2, 3)}
    assert 8 <= sizes[1] <= 10 and 13 <= sizes[2] <= 15 and 22 <= sizes[3] <= 26
    assert Image.open(scface / "mugshot_frontal_cropped_all/001_frontal.JPG").size == (128, 128)
    probe = next((standins["tinyface"] / "Testing_Set/Probe").iterdir())
    assert 10 <= Image.open(probe).size[0] <= 20


def test_standin_lfw_folds_use_disjoint_identities():
    entries = lfw_pairs(40, 3, folds=10, per_fold=5, seed=1)
    folds = [set() for _ in range(10)]
    for k, e in enumerate(entries):
        folds[k // 10] |= {e.name_a, e.name_b}
    for i in range(10):
        for j in range(i + 1, 10):
            assert folds[i].isdisjoint(folds[j])
    assert all(e.name_a != e.name_b for e in entries if not e.same)
    assert entries == lfw_pairs(40, 3, folds=10, per_fold=5, seed=1)


def test_materialise_standins_is_cached_and_atomic(standins):
    folder = standins["lfw"].parent
    marker = folder / COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns
    again = materialise_standins(folder.parent, seed=3, size_preset="test")
    assert again == standins and marker.stat().st_mtime_ns == stamp
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    with pytest.raises(ValueError):
        materialise_standins(folder.parent, size_preset="huge")


def test_materialise_standins_regenerates_incomplete(tmp_path):
    paths = materialise_standins(tmp_path, seed=0, size_preset="test")
    shutil.rmtree(paths["scface"])
    again = materialise_standins(tmp_path, seed=0, size_preset="test")
    assert len(scan_scface(again["scface"], expected_subjects=6).gallery) == 6
