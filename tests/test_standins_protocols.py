"""The LFW / XQLFW stand-ins and pairs files measure what the benchmark columns mean; registering them.

References (layouts transcribed here by hand, not produced by our writer):

* LFW ``pairs.txt`` (view 2; LFW README, "pairs.txt"): line 1 ``10<TAB>300``; then 10 sets, each 300 matched
  lines ``name<TAB>n1<TAB>n2`` followed by 300 mismatched lines ``name1<TAB>n1<TAB>name2<TAB>n2``; image
  ``n`` of ``name`` is ``name/name_%04d.jpg``; the 6,000 pairs are distinct. ``pairsDevTrain.txt`` has a
  single-number header (one set).
* XQLFW (Knoche et al., "Cross-Quality LFW", ``xqlfw_pairs.txt``): the same format over an LFW-style tree in
  which some images are degraded and each pair puts an image of high quality against one of low quality.
* The 10-fold protocol (deepinsight/insightface ``recognition/.../verification.py``, ``calculate_roc``):
  ``KFold(n_splits=nrof_folds, shuffle=False)``, contiguous folds, so the fold count must be the file's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.catalog import load_catalog, register
from engine.data.check import check_dataset
from engine.data.pairs import load_pairs_tree, parse_pairs, write_pairs
from engine.data.standins import (
    LFW_FIRST_IDENTITY,
    LFW_PAIRS,
    XQLFW_PAIRS,
    lfw_pairs,
    write_lfw_tree,
    write_xqlfw_tree,
    xqlfw_pairs,
)
from engine.data.synthetic import render_face
from engine.errors import DatasetError
from engine.evaluate.verification import fold_sizes, kfold_accuracy

ROOT = Path(__file__).resolve().parents[1]


def read_pairs_text(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header tokens and the pair lines' fields, split as LFW's README describes (tabs, any whitespace)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return lines[0].split(), [line.split() for line in lines[1:]]


def unordered(fields: list[str]) -> frozenset[tuple[str, int]]:
    if len(fields) == 3:
        return frozenset({(fields[0], int(fields[1])), (fields[0], int(fields[2]))})
    return frozenset({(fields[0], int(fields[1])), (fields[2], int(fields[3]))})


def images_of(fields: list[str]) -> tuple[tuple[str, int], tuple[str, int]]:
    if len(fields) == 3:
        return (fields[0], int(fields[1])), (fields[0], int(fields[2]))
    return (fields[0], int(fields[1])), (fields[2], int(fields[3]))


# ---------------------------------------------------------------------------------------------- LFW (task 3)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_lfw_standin_pairs_are_distinct(seed):
    """The tiny preset's 600 LFW pairs had 55 repeated lines (seed 0); LFW's 6,000 are all distinct."""
    entries = lfw_pairs(100, 4, folds=10, per_fold=30, seed=seed)
    keys = [frozenset({(e.name_a, e.n_a), (e.name_b, e.n_b)}) for e in entries]
    assert len(entries) == 600 and len(set(keys)) == 600
    assert all(e.n_a < e.n_b for e in entries if e.same) and all(e.name_a != e.name_b for e in entries if not e.same)
    small = lfw_pairs(20, 3, folds=10, per_fold=3, seed=seed)  # the `test` preset: 6 matched candidates a fold
    assert len({frozenset({(e.name_a, e.n_a), (e.name_b, e.n_b)}) for e in small}) == 60


def test_lfw_standin_keeps_lfws_view2_layout(tmp_path):
    entries = lfw_pairs(600, 4, folds=10, per_fold=300, seed=2)
    write_pairs(tmp_path / "pairs.txt", 10, 300, entries)
    assert (tmp_path / "pairs.txt").read_text().splitlines()[0] == "10\t300"
    header, rows = read_pairs_text(tmp_path / "pairs.txt")
    assert header == ["10", "300"] and len(rows) == 6000
    for fold in range(10):
        block = rows[600 * fold: 600 * (fold + 1)]
        assert [len(r) for r in block] == [3] * 300 + [4] * 300
    assert len({unordered(r) for r in rows}) == 6000
    assert parse_pairs(tmp_path / "pairs.txt")[:2] == (10, 300)


def test_lfw_standin_refuses_more_pairs_than_distinct_ones():
    with pytest.raises(ValueError, match="has only 2 distinct matched pairs, 3 asked for"):
        lfw_pairs(20, 2, folds=10, per_fold=3)  # 2 identities x 1 pair a fold
    with pytest.raises(ValueError, match="has only 4 distinct matched pairs, 5 asked for"):
        xqlfw_pairs(20, 3, folds=10, per_fold=5)  # 2 identities x (1 sharp x 2 degraded) a fold


# ---------------------------------------------------------------------------------------------- XQLFW (task 2)


def detail_ratio(root: Path, seed: int, name: str, number: int) -> float:
    """High-frequency energy (mean absolute neighbour difference of the grey image) of a stored image over
    that of the undegraded face it was made from (``render_face``): about 1 when sharp (JPEG 95 even adds a
    little), far below when it went down to 7-20 px and back."""
    index = int(name.split("_")[1]) - 1
    source = render_face(seed, LFW_FIRST_IDENTITY + index, number - 1, 112).astype(np.float64).mean(axis=2)
    stored = np.asarray(Image.open(root / name / f"{name}_{number:04d}.jpg").convert("RGB"), np.float64).mean(axis=2)

    def energy(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())

    return energy(stored) / energy(source)


SHARP = 0.8  # sharp images measure 1.0-1.25 here, degraded ones 0.15-0.57 (seeds 0-7)


def degraded_positions(root: Path, seed: int) -> list[int]:
    """For each pair of ``xqlfw_pairs.txt``: 0 if the first image is the degraded one, 1 if the second."""
    _, rows = read_pairs_text(root / XQLFW_PAIRS)
    positions = []
    for fields in rows:
        sharp = [detail_ratio(root, seed, name, n) > SHARP for name, n in images_of(fields)]
        assert sharp.count(True) == 1, f"{fields}: exactly one image of an XQLFW pair is degraded, got {sharp}"
        positions.append(sharp.index(False))
    return positions


def test_xqlfw_standin_degrades_exactly_one_image_per_pair(tmp_path):
    root = write_xqlfw_tree(tmp_path / "xq", 20, 3, folds=10, per_fold=3, seed=5)
    header, rows = read_pairs_text(root / XQLFW_PAIRS)
    assert header == ["10", "3"] and [len(r) for r in rows[:6]] == [3, 3, 3, 4, 4, 4]
    assert len({unordered(r) for r in rows}) == 60
    positions = degraded_positions(root, 5)
    assert 0 in positions and 1 in positions  # the degraded image is sometimes first, sometimes second
    # The LFW stand-in of the same seed stays sharp everywhere.
    lfw = write_lfw_tree(tmp_path / "lfw", 20, 3, folds=10, per_fold=3, seed=5)
    _, lfw_rows = read_pairs_text(lfw / LFW_PAIRS)
    assert all(detail_ratio(lfw, 5, name, n) > SHARP for fields in lfw_rows for name, n in images_of(fields))


def test_xqlfw_degraded_side_is_seeded(tmp_path):
    first = degraded_positions(write_xqlfw_tree(tmp_path / "a", 20, 3, folds=10, per_fold=3, seed=5), 5)
    again = degraded_positions(write_xqlfw_tree(tmp_path / "b", 20, 3, folds=10, per_fold=3, seed=5), 5)
    other = degraded_positions(write_xqlfw_tree(tmp_path / "c", 20, 3, folds=10, per_fold=3, seed=6), 6)
    assert first == again and first != other
    assert (tmp_path / "a" / XQLFW_PAIRS).read_bytes() == (tmp_path / "b" / XQLFW_PAIRS).read_bytes()
    assert [e.to_line() for e in xqlfw_pairs(20, 3, 10, 3, seed=5)] == [
        "\t".join(r) for r in read_pairs_text(tmp_path / "a" / XQLFW_PAIRS)[1]]


# ---------------------------------------------------------------------------------------------- folds (task 4)


def small_tree(root: Path) -> Path:
    """Ten stand-in identities with three images each (the pairs file is written by hand below)."""
    write_lfw_tree(root, 10, 3, folds=5, per_fold=1, seed=0, image_size=16)
    (root / LFW_PAIRS).unlink()
    return root


def five_fold_pairs(path: Path) -> None:
    """A ``5 4`` file: 5 folds x (4 matched + 4 mismatched), fold f over Person 2f+1 and 2f+2."""
    lines = ["5\t4"]
    for f in range(5):
        a, b = f"Person_{2 * f + 1:04d}", f"Person_{2 * f + 2:04d}"
        lines += [f"{a}\t1\t2", f"{a}\t1\t3", f"{b}\t1\t2", f"{b}\t2\t3"]
        lines += [f"{a}\t1\t{b}\t1", f"{a}\t2\t{b}\t2", f"{a}\t3\t{b}\t3", f"{a}\t1\t{b}\t3"]
    path.write_text("\n".join(lines) + "\n")


def test_pairs_file_header_sets_the_folds(tmp_path):
    tree = small_tree(tmp_path / "tree")
    five_fold_pairs(tmp_path / "pairs_5x4.txt")
    pairs = load_pairs_tree(tree, tmp_path / "pairs_5x4.txt", size=16)
    assert (pairs.num_pairs, pairs.folds, pairs.per_fold) == (40, 5, 4)
    bounds = pairs.fold_bounds()
    assert bounds.tolist() == [0, 8, 16, 24, 32, 40]
    assert [pairs.issame[s:e].tolist() for s, e in zip(bounds[:-1], bounds[1:], strict=True)] == \
        [[True] * 4 + [False] * 4] * 5
    # The protocol split with the file's fold count: every test fold holds both kinds ...
    scores = np.where(pairs.issame, 0.5, 2.5)
    result = kfold_accuracy(scores, pairs.issame, folds=pairs.folds)
    assert len(result.fold_accuracies) == 5 and result.accuracy == 1.0
    # ... while the default 10 folds would cut this file into folds of one kind each.
    ten = np.concatenate([[0], np.cumsum(fold_sizes(40, 10))])
    assert all(len(set(pairs.issame[s:e].tolist())) == 1 for s, e in zip(ten[:-1], ten[1:], strict=True))

    entry = register("five", tree, pairs=tmp_path / "pairs_5x4.txt")
    report = check_dataset(entry)
    assert report.ok and (report.pairs, report.folds) == (40, 5)


def test_single_number_header_is_one_fold(tmp_path):
    tree = small_tree(tmp_path / "tree")
    lines = ["2", "Person_0001\t1\t2", "Person_0002\t1\t3", "Person_0001\t1\tPerson_0002\t1",
             "Person_0003\t2\tPerson_0004\t2"]
    (tmp_path / "pairsDevTest.txt").write_text("\n".join(lines) + "\n")
    pairs = load_pairs_tree(tree, tmp_path / "pairsDevTest.txt", size=16)
    assert (pairs.folds, pairs.per_fold) == (1, 2) and pairs.fold_bounds().tolist() == [0, 4]


# ---------------------------------------------------------------------------------------------- registering (task 5)


@pytest.fixture
def lfw_beside(tmp_path) -> tuple[Path, Path]:
    """LFW as distributed: the image folder ``lfw/`` and ``pairs.txt`` next to it, not inside."""
    tree = write_lfw_tree(tmp_path / "lfw", 20, 3, folds=10, per_fold=3, seed=0, image_size=16)
    pairs = (tree / LFW_PAIRS).rename(tmp_path / "pairs.txt")
    return tree, pairs


def test_pairs_option_implies_a_verification_set(lfw_beside, tmp_path):
    tree, pairs = lfw_beside
    catalog = tmp_path / "catalog.json"
    entry = register("lfw", tree, pairs=pairs, catalog=catalog)
    assert (entry.format, entry.pairs) == ("pairs", str(pairs.resolve()))
    assert load_catalog(catalog)["lfw"].format == "pairs"
    report = check_dataset(entry)
    assert report.ok and (report.pairs, report.folds) == (60, 10)
    assert register("lfw", tree, fmt="pairs", pairs=pairs, catalog=catalog).format == "pairs"
    with pytest.raises(DatasetError, match=r"--format folder was given: drop --format or use --format pairs"):
        register("lfw", tree, fmt="folder", pairs=pairs, catalog=catalog)
    with pytest.raises(DatasetError, match="is a file"):
        register("lfw", pairs, pairs=pairs, catalog=catalog)


def test_lfw_tree_with_pairs_beside_is_not_silently_a_folder(lfw_beside, tmp_path):
    tree, pairs = lfw_beside
    catalog = tmp_path / "catalog.json"
    with pytest.raises(DatasetError, match=re.escape(f"`lrfr data add lfw {tree} --pairs {pairs}`")):
        register("lfw", tree, catalog=catalog)
    with pytest.raises(DatasetError, match=re.escape(f"no pairs file in {tree}: pass --pairs PATH (found {pairs}")):
        register("lfw", tree, fmt="pairs", catalog=catalog)
    assert not catalog.exists()
    assert register("lfw_images", tree, fmt="folder", catalog=catalog).format == "folder"  # on purpose


def test_training_folder_next_to_a_pairs_file_still_registers(tmp_path):
    """CASIA-WebFace names (``0000045/001.jpg``) are not LFW's: no false alarm from a pairs file nearby."""
    (tmp_path / "pairs.txt").write_text("1\t1\n")
    for ident in ("0000045", "0000099"):
        (tmp_path / "casia" / ident).mkdir(parents=True)
        Image.fromarray(render_face(0, int(ident), 0, 16)).save(tmp_path / "casia" / ident / "001.jpg")
    assert register("casia", tmp_path / "casia", catalog=tmp_path / "c.json").format == "folder"


def _lrfr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRFR_")}
    env.update(HOME=str(tmp_path), LRFR_CATALOG=str(tmp_path / "catalog.json"), LRFR_DB=str(tmp_path / "runs.db"),
               LRFR_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), COLUMNS="200")
    script = Path(sys.executable).with_name("lrfr")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lrfr_tui.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_cli_data_add_with_pairs(lfw_beside, tmp_path):
    tree, pairs = lfw_beside
    proc = _lrfr(tmp_path, "data", "add", "lfw", str(tree), "--pairs", str(pairs))
    assert proc.returncode == 0, proc.stderr
    assert "(pairs)" in proc.stderr
    saved = json.loads((tmp_path / "catalog.json").read_text())["lfw"]
    assert saved["format"] == "pairs" and saved["pairs"] == str(pairs.resolve())

    proc = _lrfr(tmp_path, "data", "add", "xq", str(tree))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrfr: error: ") and f"--pairs {pairs}" in lines[0]
    assert "xq" not in json.loads((tmp_path / "catalog.json").read_text())
