"""SCface "w/o fine-tuning" is evaluated on the DCR test ids (80 of 130), as the paper's Tables 1, 4 and 6 are.

Evidence for the mapping (issue 10, item 2):

* the released evaluation loop, hurricanelx/LRFR ``SCface_eval.py`` (``test_1N_scface``), takes its gallery
  from ``testing_sid_id.lst`` and its probes from ``distance_1_test.lst`` .. ``distance_3_test.lst``, and
  ``calculate_cmc`` divides by ``len(probe_features)``: a rank-1 cell is (hits) / (probes at that distance);
* every d1/d2/d3 cell of Tables 4 and 6 (``/work/shared/PAPER_TABLES.md``) is a whole number of 400 probes
  (80 test ids x 5 visible cameras) to print rounding, and eight of them cannot be a count out of 650
  (all 130 subjects x 5 cameras) - ``test_published_zero_shot_cells_are_counts_out_of_400``.

The SCface file names are those of the bob.db.scface protocol file (``shared/protocols/scface_protocols.tsv``);
the synthetic tree written here uses them (``engine.data.standins.write_scface_tree``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.evaluate.benchmarks as benchmarks
from engine.catalog import register
from engine.config import resolve
from engine.data.scface import (
    FINETUNE,
    NUM_SUBJECTS,
    PROTOCOLS,
    VISIBLE_CAMERAS,
    ZERO_SHOT,
    ZERO_SHOT_ALL,
    dcr_train_count,
    saved_split,
    split_ids,
)
from engine.data.standins import SIZE_PRESETS, write_scface_tree
from engine.errors import ConfigError
from engine.evaluate import run_benchmarks
from engine.reporting import Reporter
from engine.train import build_backbone
from lrfr_tui.reference import paper_tables, parse_tables
from tests.conftest import MICRO_OVERRIDES, SHARED

PAPER_TABLES = SHARED / "PAPER_TABLES.md"


class Results(Reporter):
    def __init__(self) -> None:
        self.rows: dict[tuple, float] = {}
        self.events: list[tuple[str, str]] = []

    def result(self, benchmark, protocol, metric, resolution, value):
        self.rows[(benchmark, protocol, metric, resolution)] = value

    def artifact(self, kind, path):
        pass

    def event(self, kind, message, **fields):
        self.events.append((kind, message))


@pytest.fixture(scope="module")
def scface130(tmp_path_factory) -> Path:
    """A full-size SCface tree (130 subjects, mugshot + 5 cameras x 3 distances each): ~3 s to write."""
    return write_scface_tree(tmp_path_factory.mktemp("scface130") / "SCface", num_subjects=NUM_SUBJECTS,
                             include_infrared=False)


class Spy:
    """Records what each protocol evaluates; fine-tuning is replaced by 'return the model as it is'."""

    def __init__(self, monkeypatch) -> None:
        self.evaluated: dict[str, dict] = {}
        self.finetuned_on: tuple[int, int] | None = None  # (identities, images)
        original = benchmarks._scface_protocol

        def protocol(ctx, data, name, model=None):
            self.evaluated[name] = {"gallery": np.asarray(data.gallery_ids).copy(),
                                    "probes": {d: (p.ids.copy(), p.cams.copy()) for d, p in data.probes.items()}}
            return original(ctx, data, name, model=model)

        def finetune(ctx, dataset, label):
            self.finetuned_on = (dataset.num_classes, len(dataset))
            return ctx.model

        monkeypatch.setattr(benchmarks, "_scface_protocol", protocol)
        monkeypatch.setattr(benchmarks, "finetune", finetune)


def _config(*overrides: str):
    return resolve("tiny", MICRO_OVERRIDES + ["eval.benchmarks=[scface]", *overrides])


def _micro_model(cfg):
    torch.manual_seed(0)
    return build_backbone(cfg).eval()


def test_zero_shot_gallery_is_the_finetune_splits_80_test_ids(scface130, tmp_path, monkeypatch):
    register("scface", scface130)
    cfg = _config("eval.source=catalog", "eval.scface_protocols=[zero_shot,finetune,zero_shot_all130]")
    spy = Spy(monkeypatch)
    rec = Results()
    run_benchmarks(_micro_model(cfg), cfg, "cpu", rec, run_dir=tmp_path)

    split = json.loads((tmp_path / "scface_split.json").read_text())
    train, test = set(split["train_ids"]), set(split["test_ids"])
    assert (len(train), len(test), split["n_train"]) == (50, 80, 50) and not train & test
    assert train | test == set(range(1, NUM_SUBJECTS + 1))
    zero, tuned, everyone = (spy.evaluated[p] for p in (ZERO_SHOT, FINETUNE, ZERO_SHOT_ALL))
    # zero_shot: a gallery of the 80 test mugshots, the same ids finetune tests on ...
    assert set(zero["gallery"].tolist()) == test == set(tuned["gallery"].tolist())
    assert len(zero["gallery"]) == 80
    # ... and 400 probes per distance: each of the 80 ids seen by the 5 visible cameras.
    for d in (1, 2, 3):
        ids, cams = zero["probes"][d]
        assert len(ids) == 5 * 80 == 400 and set(ids.tolist()) == test
        assert all(sorted(cams[ids == i].tolist()) == list(VISIBLE_CAMERAS) for i in test)
        assert len(everyone["probes"][d][0]) == 5 * NUM_SUBJECTS == 650
    assert len(everyone["gallery"]) == NUM_SUBJECTS
    assert spy.finetuned_on == (50, 50 * 16)  # the 50 other ids: mugshot + 15 surveillance images each
    # Each reported rank-1 is a count out of 400 (zero_shot) or 650 (zero_shot_all130).
    for protocol, n in ((ZERO_SHOT, 400), (FINETUNE, 400), (ZERO_SHOT_ALL, 650)):
        for d in (1, 2, 3):
            value = rec.rows[("scface", protocol, f"rank1_d{d}", None)]
            assert value * n == pytest.approx(round(value * n), abs=1e-6), (protocol, d, value)


def test_zero_shot_alone_reuses_the_runs_saved_split(scface130, tmp_path, monkeypatch):
    """Evaluating zero_shot later (or alone) must see the ids the run's finetune protocol tested on."""
    register("scface", scface130)
    cfg = _config("eval.source=catalog", "eval.scface_protocols=[zero_shot]")
    model = _micro_model(cfg)
    # A valid split of this set that the seeded draw would not produce: ids 1..50 fine-tune, 51..130 test.
    saved = {"seed": 0, "train_ids": list(range(1, 51)), "test_ids": list(range(51, 131))}
    assert split_ids(range(1, 131), 50, seed=0)[0].tolist() != saved["train_ids"]
    (tmp_path / "scface_split.json").write_text(json.dumps(saved))
    spy = Spy(monkeypatch)
    run_benchmarks(model, cfg, "cpu", Results(), run_dir=tmp_path)
    assert spy.evaluated[ZERO_SHOT]["gallery"].tolist() == list(range(51, 131))
    assert FINETUNE not in spy.evaluated and ZERO_SHOT_ALL not in spy.evaluated

    # A split that does not fit (overlapping halves) is drawn again with the seed, said so, and saved.
    (tmp_path / "scface_split.json").write_text(json.dumps({**saved, "test_ids": list(range(40, 131))}))
    rec = Results()
    run_benchmarks(model, cfg, "cpu", rec, run_dir=tmp_path)
    _, expected_test = split_ids(range(1, 131), 50, seed=0)
    assert spy.evaluated[ZERO_SHOT]["gallery"].tolist() == expected_test.tolist()
    assert any("drawing the split again" in message for _, message in rec.events)
    assert json.loads((tmp_path / "scface_split.json").read_text())["test_ids"] == expected_test.tolist()

    # Without a run directory the same seeded split is used (nothing saved).
    run_benchmarks(model, cfg, "cpu", Results(), run_dir=None)
    assert spy.evaluated[ZERO_SHOT]["gallery"].tolist() == expected_test.tolist()


def test_stand_in_keeps_the_split_rule(tmp_path, monkeypatch):
    """The synthetic stand-in has fewer than 130 subjects: zero_shot tests on total - n_train of them."""
    cfg = _config("eval.source=synthetic", "eval.scface_protocols=[zero_shot,finetune,zero_shot_all130]")
    total = SIZE_PRESETS[cfg.eval.standin_size]["scface"]["num_subjects"]
    assert total < NUM_SUBJECTS
    spy = Spy(monkeypatch)
    run_benchmarks(_micro_model(cfg), cfg, "cpu", Results(), run_dir=tmp_path)
    n_train = dcr_train_count(total, cfg.eval.scface_train_ids)
    split = json.loads((tmp_path / "scface_split.json").read_text())
    assert len(split["train_ids"]) == n_train and len(split["test_ids"]) == total - n_train
    zero = spy.evaluated[ZERO_SHOT]
    assert zero["gallery"].tolist() == split["test_ids"] == spy.evaluated[FINETUNE]["gallery"].tolist()
    assert all(len(zero["probes"][d][0]) == 5 * (total - n_train) for d in (1, 2, 3))
    assert len(spy.evaluated[ZERO_SHOT_ALL]["gallery"]) == total


def test_split_rule_and_saved_split_checks():
    assert dcr_train_count(130) == 50 and 130 - dcr_train_count(130) == 80
    assert dcr_train_count(130, 60) == 60  # the full set takes eval.scface_train_ids as given (was capped at 50)
    assert dcr_train_count(30) == 12 and dcr_train_count(6) == 2 and dcr_train_count(1) == 1
    assert dcr_train_count(30, 5) == 5  # never more than asked
    ids = np.arange(1, 11)
    good = {"seed": 3, "train_ids": [1, 2, 3], "test_ids": [4, 5, 6, 7, 8, 9, 10]}
    assert [h.tolist() for h in saved_split(good, ids, 3, seed=3)] == [[1, 2, 3], list(range(4, 11))]
    assert saved_split(good, ids, 3, seed=4) is None  # another seed
    assert saved_split(good, ids, 4, seed=3) is None  # another size
    assert saved_split({**good, "test_ids": [3, 4, 5, 6, 7, 8, 9, 10]}, ids, 3, seed=3) is None  # overlap
    assert saved_split({**good, "test_ids": [4, 5]}, ids, 3, seed=3) is None  # does not cover the set
    assert saved_split({"seed": 3}, ids, 3, seed=3) is None and saved_split([1], ids, 3, seed=3) is None


def test_config_lists_the_protocols():
    assert resolve("tiny").eval.scface_protocols == [ZERO_SHOT, FINETUNE]  # all-130 is opt-in
    for name in PROTOCOLS:
        assert resolve("tiny", [f"eval.scface_protocols=[{name}]"]).eval.scface_protocols == [name]
    with pytest.raises(ConfigError, match="zero_shot_all130"):
        resolve("tiny", ["eval.scface_protocols=[zero_shot_130]"])


def _zero_shot_cells(tables) -> list[tuple[str, str, float]]:
    """The d1/d2/d3 cells of Tables 4 and 6, each distinct row once (Table 6 repeats three of Table 4)."""
    seen: dict[tuple, str] = {}
    for key in ("table4", "table6"):
        for label, row in tables[key].rows.items():
            seen.setdefault(tuple(row.get(c) for c in ("d1", "d2", "d3", "XQLFW", "LFW")), f"{key}: {label}")
    return [(label, d, values[i]) for values, label in seen.items() for i, d in enumerate(("d1", "d2", "d3"))]


def _count_out_of(value: float, n: int) -> bool:
    """Whether a printed percentage (one decimal) can be k/n for a whole k."""
    k = round(value / 100 * n)
    return any(abs(100 * j / n - value) <= 0.05 + 1e-9 for j in (k - 1, k, k + 1))


def test_published_zero_shot_cells_are_counts_out_of_400():
    text = PAPER_TABLES.read_text() if PAPER_TABLES.is_file() else None
    tables = parse_tables(text) if text else paper_tables()
    cells = _zero_shot_cells(tables)
    assert len(cells) == 48  # 16 distinct configurations x 3 distances
    assert all(_count_out_of(v, 400) for _, _, v in cells), [c for c in cells if not _count_out_of(c[2], 400)]
    impossible_650 = [c for c in cells if not _count_out_of(c[2], 650)]
    assert len(impossible_650) == 8, impossible_650
    assert ("table4: MAug + Ours(1)", "d1", 73.0) in impossible_650  # 292/400; k/650 gives 72.9 or 73.1
    # Table 1's "w/o fine-tuning" row is Table 4's "MAug + Ours(1)", so it is on the 80 ids too.
    wo = tables["table1"].rows["Ours (w/o fine-tuning)"]
    assert [wo[d] for d in ("d1", "d2", "d3")] == [tables["table4"].rows["MAug + Ours(1)"][d]
                                                   for d in ("d1", "d2", "d3")]
