"""RecordIO packs as mxnet's ``im2rec`` and insightface's ``face2rec2`` write them, read by our reader.

The packs here are NOT written with ``engine.data.recordio.write_recordio``: this file transcribes the reference
writers byte for byte, so a reader bug cannot hide behind a writer with the same bug.

* record framing: dmlc/dmlc-core ``src/recordio.cc`` (``RecordIOWriter::WriteRecord``): ``uint32`` magic
  ``0xced7230a``, ``uint32 lrecord = cflag << 29 | length``; a payload is split at every 4-byte-aligned
  occurrence of the magic word (cflag 1 first part, 2 middle, 3 last, 0 a whole record), the magic word itself
  dropped; zero padding to a multiple of 4 after the last part only.
* payload: apache/mxnet ``python/mxnet/recordio.py`` (``pack``): ``struct.pack('IfQQ', flag, label, id, id2)``;
  a non-scalar label becomes ``flag = label.size``, ``label = 0`` and the float32 labels go before the image.
* index: apache/mxnet ``python/mxnet/recordio.py`` (``MXIndexedRecordIO.write_idx``): ``'%s\\t%d\\n' % (key,
  tell())`` before each record.
* apache/mxnet ``tools/im2rec.py``: ``.lst`` lines ``index\\tlabel...\\tpath``; ``image_encode`` with
  ``--pack-label`` packs ``IRHeader(0, item[2:], item[0], 0)`` and ``write_idx(item[0], s)``, so keys are the
  list's indices (from 0) and the first record is an image with ``flag = len(labels)``; ``make_list`` shuffles
  with ``random.seed(100)`` unless ``--shuffle`` is off.
* deepinsight/insightface ``src/data/face2rec2.py`` (``read_list`` / ``image_encode``): images are keys
  ``1..n`` with labels ``[identity, aligned]`` (so flag 2), then key 0 ``IRHeader(2, [n + 1, n + 1 + ids], 0,
  0)`` packed with an empty image, then one record per identity (keys ``n + 1 ..``, labels ``[first image
  key, end key]``), also without image.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.catalog import DatasetEntry
from engine.data.check import check_dataset
from engine.data.recordio import RecordIODataset
from engine.data.synthetic import render_face

ROOT = Path(__file__).resolve().parents[1]
KMAGIC = 0xCED7230A


# ---------------------------------------------------------------------------------------------- transcriptions


def dmlc_write_record(fh, buf: bytes) -> None:
    """dmlc-core RecordIOWriter::WriteRecord, line by line."""
    magic = struct.pack("I", KMAGIC)
    length = len(buf)
    lower_align = (length >> 2) << 2
    upper_align = ((length + 3) >> 2) << 2
    dptr = 0
    for i in range(0, lower_align, 4):
        if buf[i:i + 4] == magic:
            fh.write(magic)
            fh.write(struct.pack("I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)))
            fh.write(buf[dptr:i])
            dptr = i + 4
    fh.write(magic)
    fh.write(struct.pack("I", ((3 if dptr != 0 else 0) << 29) | (length - dptr)))
    fh.write(buf[dptr:])
    fh.write(b"\0" * (upper_align - length))


def mx_pack(header: tuple, s: bytes) -> bytes:
    """mxnet.recordio.pack(IRHeader(flag, label, id, id2), s)."""
    flag, label, id_, id2 = header
    if isinstance(label, (int, float)):
        flag = 0
    else:
        arr = np.asarray(label, dtype=np.float32)
        flag, label = arr.size, 0
        s = arr.tobytes() + s
    return struct.pack("IfQQ", flag, label, id_, id2) + s


class MXIndexedRecordIOWriter:
    """mxnet.recordio.MXIndexedRecordIO(idx, rec, 'w'): write_idx(key, buf)."""

    def __init__(self, idx_path: Path, rec_path: Path) -> None:
        self.frec = open(rec_path, "wb")
        self.fidx = open(idx_path, "w")

    def write_idx(self, key: int, buf: bytes) -> None:
        pos = self.frec.tell()
        dmlc_write_record(self.frec, buf)
        self.fidx.write(f"{key!s}\t{pos:d}\n")  # '%s\t%d\n' % (str(key), pos)

    def close(self) -> None:
        self.frec.close()
        self.fidx.close()


def jpeg(identity: int, sample: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render_face(0, identity, sample, 24)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pil_chw(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)


# im2rec's first record, key 0, is identity 4: a reader that takes it for insightface's header (label[0] = one
# past the last image key) reads only keys 1..3.
IDENTITIES = [4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 0]


def write_im2rec_pack(folder: Path, shuffle: bool) -> tuple[list[list[float]], list[bytes]]:
    """A pack as ``im2rec.py --pack-label --pass-through [--shuffle]`` writes it from a 9-label ``.lst``."""
    labels = [[float(ident)] + [float(10 * k + j) + 0.25 for j in range(8)] for k, ident in enumerate(IDENTITIES)]
    images = [jpeg(ident, k) for k, ident in enumerate(IDENTITIES)]
    folder.mkdir(parents=True, exist_ok=True)
    items = [(k, f"img/{k:03d}.jpg", labels[k]) for k in range(len(labels))]
    if shuffle:
        random.seed(100)
        random.shuffle(items)
    # write_list / read_list: '%d\t' + '%f\t' per label + path; read back as [int(idx), path, floats...]
    lst = "".join(f"{i:d}\t" + "".join(f"{x:f}\t" for x in lab) + f"{path}\n" for i, path, lab in items)
    (folder / "train.lst").write_text(lst)
    record = MXIndexedRecordIOWriter(folder / "train.idx", folder / "train.rec")
    for line in lst.splitlines():
        fields = [f.strip() for f in line.strip().split("\t")]
        item = [int(fields[0]), fields[-1]] + [float(f) for f in fields[1:-1]]
        header = (0, item[2:], item[0], 0)  # len(item) > 3 and args.pack_label
        record.write_idx(item[0], mx_pack(header, images[item[0]]))
    record.close()
    return labels, images


def write_face2rec2_pack(folder: Path, identities: list[int]) -> list[bytes]:
    """A pack as insightface's face2rec2.py writes it (aligned images, sorted by identity)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [jpeg(ident, k) for k, ident in enumerate(identities)]
    record = MXIndexedRecordIOWriter(folder / "train.idx", folder / "train.rec")
    ranges, last, _id = [], [-1, -1], 1
    for k, label in enumerate(identities):
        record.write_idx(_id, mx_pack((0, [float(label), 1.0], _id, 0), images[k]))
        if label != last[0]:
            if last[1] >= 0:
                ranges.append((last[1], _id))
            last = [label, _id]
        _id += 1
    ranges.append((last[1], _id))
    record.write_idx(0, mx_pack((2, [float(_id), float(_id + len(ranges))], 0, 0), b""))
    for start, end in ranges:
        record.write_idx(_id, mx_pack((2, [float(start), float(end)], _id, 0), b""))
        _id += 1
    record.close()
    return images


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("shuffle", [False, True])
def test_im2rec_pack_with_multi_float_labels_reads_every_image(tmp_path, shuffle):
    labels, images = write_im2rec_pack(tmp_path, shuffle)
    first = (tmp_path / "train.idx").read_text().splitlines()[0].split("\t")
    if not shuffle:
        assert first == ["0", "0"]  # the first record of the file is key 0, an image
    raw = (tmp_path / "train.rec").read_bytes()
    offset0 = dict(line.split("\t") for line in (tmp_path / "train.idx").read_text().splitlines())["0"]
    assert struct.unpack_from("<IIIf", raw, int(offset0))[2:] == (9, 0.0)  # flag 9: nine float labels

    ds = RecordIODataset(tmp_path / "train.rec", size=None)
    assert ds.header is None
    assert len(ds) == 12 and ds.records_listed == 12 and len(ds.unread_keys) == 0
    for i in range(12):
        key = ds.key_of(i)
        assert key == i
        np.testing.assert_array_equal(ds.label_vector(i), np.asarray(labels[key], dtype=np.float32))
        assert ds.header_of(i).flag == 9 and ds.header_of(i).id == key
        image, identity = ds[i]
        assert identity == IDENTITIES[key] == ds.label_of(i)
        np.testing.assert_array_equal(image.numpy(), pil_chw(images[key]))
    assert ds.labels.tolist() == IDENTITIES and ds.num_classes == 5

    report = check_dataset(DatasetEntry("im2rec", str(tmp_path), "recordio"))
    assert report.ok, report.problems
    assert (report.images, report.records_listed, report.records_read, report.identities) == (12, 12, 12, 5)


def test_face2rec2_pack_skips_header_and_identity_records(tmp_path):
    identities = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    images = write_face2rec2_pack(tmp_path, identities)
    idx_keys = [int(line.split("\t")[0]) for line in (tmp_path / "train.idx").read_text().splitlines()]
    assert idx_keys == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 10, 11, 12]  # header written after the images

    ds = RecordIODataset(tmp_path / "train.rec", size=None)
    assert ds.header is not None and ds.header.flag == 2 and ds.header.label == (10.0, 13.0)
    assert len(ds) == 9 and ds.identity_records == 3 and len(ds.unread_keys) == 0 and ds.records_listed == 13
    assert [ds.key_of(i) for i in range(9)] == list(range(1, 10))
    assert ds.labels.tolist() == identities
    np.testing.assert_array_equal(ds.label_vector(4), np.array([1.0, 1.0], dtype=np.float32))
    for i in (0, 8):
        np.testing.assert_array_equal(ds[i][0].numpy(), pil_chw(images[i]))

    report = check_dataset(DatasetEntry("face2rec2", str(tmp_path), "recordio"))
    assert report.ok, report.problems
    assert (report.images, report.records_listed, report.records_read, report.identities) == (9, 13, 13, 3)


def test_check_reports_records_the_reader_skips(tmp_path):
    write_face2rec2_pack(tmp_path, [0, 0, 1, 1])
    # A stray image appended under a key past the identity records: listed in the index, never read.
    with open(tmp_path / "train.rec", "ab") as fh, open(tmp_path / "train.idx", "a") as fidx:
        fidx.write(f"40\t{fh.tell():d}\n")
        dmlc_write_record(fh, mx_pack((0, 7.0, 40, 0), jpeg(7, 0)))
    ds = RecordIODataset(tmp_path / "train.rec")
    assert len(ds) == 4 and ds.unread_keys.tolist() == [40]
    report = check_dataset(DatasetEntry("stray", str(tmp_path), "recordio"))
    assert not report.ok and (report.records_listed, report.records_read) == (8, 7)
    assert any("lists 8 records but 7 are read" in p and "keys 40" in p for p in report.problems)


def test_magic_word_inside_labels_splits_the_record(tmp_path):
    """A float label whose bits are the magic word makes dmlc split the record; labels survive the reassembly."""
    magic_float = struct.unpack("<f", struct.pack("<I", KMAGIC))[0]
    labels = [3.0, magic_float, 1.5]  # the magic float lands at payload offset 28: 4-byte aligned
    record = MXIndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec")
    record.write_idx(0, mx_pack((0, labels, 0, 0), jpeg(3, 0)))
    record.write_idx(1, mx_pack((0, 2.0, 1, 0), jpeg(2, 0)))
    record.close()
    raw = (tmp_path / "train.rec").read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] >> 29 == 1  # first part of a split record
    ds = RecordIODataset(tmp_path / "train.rec", size=None)
    assert len(ds) == 2 and ds.labels.tolist() == [3, 2]
    np.testing.assert_array_equal(ds.label_vector(0), np.asarray(labels, dtype=np.float32))
    assert ds.label_vector(1).tolist() == [2.0]


def test_lrfr_data_check_counts_every_im2rec_image(tmp_path):
    """`lrfr data check` on the im2rec pack: 12 images, 12 records listed and read (it said 3 before)."""
    write_im2rec_pack(tmp_path / "pack", shuffle=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRFR_")}
    env.update(HOME=str(tmp_path), LRFR_CATALOG=str(tmp_path / "catalog.json"), LRFR_DB=str(tmp_path / "runs.db"),
               LRFR_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    script = Path(sys.executable).with_name("lrfr")
    lrfr = [str(script)] if script.exists() else [sys.executable, "-m", "lrfr_tui.cli"]
    run = {"capture_output": True, "text": True, "env": env, "cwd": tmp_path, "timeout": 120}
    add = subprocess.run([*lrfr, "data", "add", "im2rec", str(tmp_path / "pack")], **run)
    assert add.returncode == 0, add.stderr
    proc = subprocess.run([*lrfr, "data", "check", "im2rec", "--json"], **run)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["images"] == 12 and report["records_listed"] == report["records_read"] == 12
