"""`lrfr data align`: MTCNN landmarks warped onto insightface's arcface template, on real faces (ORL).

The detector tests need facenet-pytorch (`.ci/run` installs it: pip install requests tqdm && pip install
--no-deps facenet-pytorch) and the ORL faces in ../shared/data/orl_faces; they skip, saying which, without.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data.align import (
    ARCFACE_TEMPLATE,
    INSTALL_HINT,
    REPORT,
    align_folder,
    detect_landmarks,
    load_mtcnn,
    similarity_transform,
    warp_batch,
)
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
ORL = SHARED / "data" / "orl_faces"
needs_mtcnn = pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None,
                                 reason=f"facenet-pytorch (MTCNN weights) not installed: {INSTALL_HINT}")
needs_orl = pytest.mark.skipif(not (ORL / "s1" / "1.pgm").is_file(), reason=f"ORL faces not found at {ORL}")

# insightface python-package/insightface/utils/face_align.py, `arcface_dst` (112 x 112, OpenCV pixel centres).
INSIGHTFACE_ARCFACE_DST = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                           [70.7299, 92.2041]]


def test_template_and_similarity_fit():
    assert ARCFACE_TEMPLATE.tolist() == INSIGHTFACE_ARCFACE_DST
    # Points moved by a known similarity are mapped back exactly.
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_TEMPLATE - shift) @ np.linalg.inv(rot).T
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)


def test_warp_puts_source_pixels_where_the_transform_sends_them():
    image = np.zeros((3, 90, 70), dtype=np.uint8)
    dots = np.array([[20.0, 30.0], [50.0, 31.0], [35.0, 60.0]])
    for x, y in dots.astype(int):
        image[:, y, x] = 255
    m = similarity_transform(dots, np.array([[40.0, 50.0], [80.0, 50.0], [60.0, 90.0]]))
    out = warp_batch(torch.from_numpy(image[None]), m[None])[0, 0].numpy()
    assert out.shape == (112, 112)
    for x, y in (m[:, :2] @ dots.T).T + m[:, 2]:
        patch = out[int(y) - 1:int(y) + 3, int(x) - 1:int(x) + 3]
        assert patch.max() > 100, (x, y)  # the dot arrived here (bilinear spreads it over <= 2 x 2 pixels)
    assert out.sum() < 255 * 3 * 8  # and nowhere else


def _orl_subset(dst: Path, subjects: range, image: str = "1") -> Path:
    for s in subjects:
        (dst / f"s{s}").mkdir(parents=True)
        shutil.copy(ORL / f"s{s}" / f"{image}.pgm", dst / f"s{s}" / f"{image}.pgm")
    return dst


@needs_mtcnn
@needs_orl
def test_align_real_faces_puts_the_eyes_on_the_template(tmp_path):
    src = _orl_subset(tmp_path / "orl", range(1, 11))
    report = align_folder(src, tmp_path / "aligned", batch_size=4)
    assert (report.images, report.aligned, report.no_face, report.unreadable) == (10, 10, [], [])
    outputs = sorted((tmp_path / "aligned").glob("s*/1.png"))
    assert [p.parent.name for p in outputs] == sorted(f"s{s}" for s in range(1, 11))  # same layout
    faces = [np.asarray(Image.open(p)) for p in outputs]
    assert all(f.shape == (112, 112, 3) for f in faces)
    # Independent check: detect again on the aligned faces (with a black margin, for MTCNN's context).
    pad = 28
    again = detect_landmarks(load_mtcnn(), [np.pad(f, ((pad, pad), (pad, pad), (0, 0))) for f in faces])
    assert all(lm is not None for lm in again)
    eye_error = np.array([np.linalg.norm(lm[:2] - pad - ARCFACE_TEMPLATE[:2], axis=1) for lm in again])
    assert np.median(eye_error) < 4.0, eye_error.round(1)
    assert (eye_error.max(axis=1) < 6.0).mean() >= 0.8, eye_error.round(1)
    assert json.loads((tmp_path / "aligned" / REPORT).read_text())["aligned"] == 10


@needs_mtcnn
@needs_orl
def test_images_without_a_face_are_reported_or_centre_cropped(tmp_path):
    src = _orl_subset(tmp_path / "orl", range(1, 3))
    Image.new("L", (92, 112), 128).save(src / "s2" / "blank.png")
    report = align_folder(src, tmp_path / "out", batch_size=8)
    assert (report.aligned, report.no_face, report.centre_cropped) == (2, ["s2/blank.png"], 0)
    assert not (tmp_path / "out" / "s2" / "blank.png").exists()
    kept = align_folder(src, tmp_path / "kept", batch_size=8, keep_unaligned=True)
    assert (kept.aligned, kept.no_face, kept.centre_cropped) == (2, ["s2/blank.png"], 1)
    assert np.asarray(Image.open(tmp_path / "kept" / "s2" / "blank.png")).shape == (112, 112, 3)


def _cli(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys; {prelude}from lrfr_tui.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)


def test_align_without_mtcnn_says_how_to_install_it(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "src" / "a" / "0.png")
    # facenet_pytorch made unimportable in that process, as on a machine without it.
    proc = _cli("data", "align", str(tmp_path / "src"), str(tmp_path / "dst"), cwd=tmp_path,
                prelude="sys.modules['facenet_pytorch'] = None; ")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.strip().endswith(f"install it with: {INSTALL_HINT}")
    assert not (tmp_path / "dst").exists()


@needs_mtcnn
@needs_orl
def test_align_command(tmp_path):
    src = _orl_subset(tmp_path / "orl", range(1, 3))
    proc = _cli("data", "align", str(src), str(tmp_path / "dst"), "--device", "cpu", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["aligned"] == 2
    proc = _cli("data", "align", str(src), str(tmp_path / "dst"), cwd=tmp_path)
    assert proc.returncode == 2 and "is not empty" in proc.stderr
