"""The paper's reference rows carry the architecture they were trained with, and a run is compared (a delta)
only with the "Ours" row of its own architecture; SCface "w/o fine-tuning" maps to ``zero_shot`` (80 ids).

Architectures, from the released code (hurricanelx/LRFR): ``SCface_eval.py`` evaluates ``model.resnet.ResNet34``
- torchvision-style (``model/resnet.py``), the preset ``r34-code`` - and imports ``model.LResNet.LResNet50E_IR``
(IR-50, insightface's IResNet-50, preset ``r50``). The preset ``r34`` is insightface's IResNet-34, which the
paper did not train. Published numbers: ``/work/shared/PAPER_TABLES.md`` (shipped as
``lrfr_tui/data/paper_tables.md``).
"""

from __future__ import annotations

import sqlite3

import pytest

from engine.config import flatten, resolve, to_dict
from lrfr_tui import exports, results_table
from lrfr_tui.paper_layout import attach_references, paper_table
from lrfr_tui.reference import (
    ARCH_MODELS,
    ARCH_RES34,
    ARCH_RES50,
    COLUMNS,
    ROW_COLUMNS,
    WITHOUT_FINETUNING,
    paper_tables,
    parse_tables,
    row_columns,
)
from lrfr_tui.runsdb import Store
from tests.conftest import SHARED

PAPER_TABLES = SHARED / "PAPER_TABLES.md"


def test_shipped_tables_are_the_published_ones():
    if not PAPER_TABLES.is_file():
        pytest.skip(f"{PAPER_TABLES} is not present")
    shared, shipped = parse_tables(PAPER_TABLES.read_text()), paper_tables()
    assert set(shared) == set(shipped)
    for key in shared:
        assert shipped[key].rows == shared[key].rows, key


def test_every_row_is_labelled_with_its_architecture():
    tables = paper_tables()
    for key, table in tables.items():
        assert set(table.arch) == set(table.rows), key
        assert all(table.arch.values()), key
    for key in ("table1", "table2", "table3"):
        assert tables[key].arch["Ours (Res34)"] == ARCH_RES34 == "ResNet34 (released code)"
        assert tables[key].arch["Ours (Res50)"] == ARCH_RES50 and ARCH_RES50.startswith("IR-50")
    assert tables["table1"].arch[WITHOUT_FINETUNING] == ARCH_RES34
    for key in ("table4", "table5", "table6"):  # the paper's own ResNet34 ablations
        assert set(tables[key].arch.values()) == {ARCH_RES34}, key
    assert tables["table1"].arch["DDL (Res50, 2020)"] == "Res50 (as cited)"
    assert tables["table3"].arch["Face Transformer (2021)"] == "not stated"
    # The engine model each of the paper's architectures is; IResNet-34 is neither.
    assert ARCH_MODELS == {ARCH_RES34: "resnet34", ARCH_RES50: "iresnet50"}
    assert resolve("r34-code").model.name == "resnet34" and resolve("r50").model.name == "iresnet50"
    assert resolve("r34").model.name == "iresnet34" not in ARCH_MODELS.values()


def test_without_finetuning_numbers_map_to_zero_shot_never_all130():
    wo = row_columns("table1", WITHOUT_FINETUNING)
    assert {c.protocol for c in wo.values()} == {"zero_shot"} and set(wo) == {"d1", "d2", "d3", "avg"}
    assert {c.protocol for c in row_columns("table1", "Ours (Res34)").values()} == {"finetune"}
    for key in ("table4", "table6"):
        assert {c.protocol for c in COLUMNS[key].values() if c.benchmark == "scface"} == {"zero_shot"}
    every = [c for m in (*COLUMNS.values(), *ROW_COLUMNS.values()) for c in m.values()]
    assert all(c.protocol != "zero_shot_all130" for c in every)


SCFACE = {"zero_shot": 0.70, "finetune": 0.90, "zero_shot_all130": 0.60}


def _run(store: Store, preset: str, *overrides: str) -> int:
    cfg = resolve(preset, list(overrides))
    run_id = store.create_run(to_dict(cfg), flatten(cfg), f"lrfr run --preset {preset}", status="queued")
    rows = [("lfw", "insightface_10fold", "acc", None, 0.99), ("xqlfw", "xqlfw_official", "acc", None, 0.90)]
    for protocol, v in SCFACE.items():
        rows += [("scface", protocol, m, None, v) for m in ("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean")]
    store.add_results(run_id, rows)
    store.mark_ended(run_id, "finished", 0)
    return run_id


def _col(matrix, bench: str, protocol: str | None, metric: str) -> int:
    return next(j for j, c in enumerate(matrix.columns)
                if (c.benchmark, c.protocol, c.metric) == (bench, protocol, metric))


def test_runs_pair_with_the_row_of_their_own_architecture(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    code, r50, r34 = _run(store, "r34-code"), _run(store, "r50"), _run(store, "r34")
    code_as_ir34 = _run(store, "r34-code", "model.name=iresnet34", "name=r34-code-ir34")
    conn = sqlite3.connect(db)
    matrix = results_table.results_matrix(conn, runs=[code, r50, r34, code_as_ir34])
    layout = paper_table(conn, matrix, None)
    rows = {r.label: r for r in layout.rows}
    refs = {r.label: r for r in layout.references}
    res34 = "paper 1, 3: Ours (Res34) [ResNet34 (released code)]"
    res50 = "paper 1, 3: Ours (Res50) [IR-50 (LResNet50E_IR)]"
    assert set(refs) == {res34, res50}
    assert refs[res34].arch == ARCH_RES34 and refs[res50].arch == ARCH_RES50

    lfw = _col(matrix, "lfw", "insightface_10fold", "acc")
    xq = _col(matrix, "xqlfw", "xqlfw_official", "acc")
    zero = _col(matrix, "scface", "zero_shot", "rank1_d1")
    tuned = _col(matrix, "scface", "finetune", "rank1_d1")
    all130 = _col(matrix, "scface", "zero_shot_all130", "rank1_d1")
    # r34-code (the released ResNet34) vs "Ours (Res34)": Table 3 for LFW/XQLFW, Table 1 for SCface,
    # the "w/o fine-tuning" row (80 ids) under zero_shot, nothing under zero_shot_all130.
    row = rows["r34-code"]
    assert row.reference == res34
    assert row.delta[lfw] == pytest.approx(0.99 - 0.9903) and row.delta[xq] == pytest.approx(0.90 - 0.9218)
    assert row.delta[zero] == pytest.approx(0.70 - 0.730) and row.delta[tuned] == pytest.approx(0.90 - 0.918)
    assert refs[res34].values[all130] is None and row.delta[all130] is None
    # r50 (IResNet-50 = IR-50) vs "Ours (Res50)"; the paper has no Res50 number without fine-tuning.
    row = rows["r50"]
    assert row.reference == res50
    assert row.delta[lfw] == pytest.approx(0.99 - 0.9940) and row.delta[tuned] == pytest.approx(0.90 - 0.925)
    assert row.delta[zero] is None and row.delta[all130] is None
    # r34 (IResNet-34) - and r34-code switched to IResNet-34 - are shown the labelled row, never a delta.
    for label in ("r34", "r34-code-ir34"):
        assert rows[label].reference is None and rows[label].delta == [], label

    data = layout.as_dict()
    assert {(r["label"], r["arch"]) for r in data["reference_rows"]} == {(res34, ARCH_RES34), (res50, ARCH_RES50)}
    sources = next(r["sources"] for r in data["reference_rows"] if r["label"] == res34)
    assert sources == ["table1: Ours (Res34)", f"table1: {WITHOUT_FINETUNING}", "table3: Ours (Res34)"]
    # Exports and the TUI's board get the same labelled rows.
    attach_references(conn, matrix, None)
    assert [r.name for r in matrix.references] == [res34, res50]
    markdown = exports.export_markdown(matrix)
    assert f"| *{res34}* |" in markdown and f"| *{res50}* |" in markdown


def test_a_lone_r34_run_gets_no_ours_delta_but_sees_the_labelled_row(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    r34 = _run(store, "r34")
    conn = sqlite3.connect(db)
    matrix = results_table.results_matrix(conn, runs=[r34])
    layout = paper_table(conn, matrix, None)
    assert layout.rows[0].reference is None and layout.rows[0].delta == []
    assert [r.label for r in layout.references] == ["paper 1, 3: Ours (Res34) [ResNet34 (released code)]"]
