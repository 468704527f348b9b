import json
import subprocess
import sys

import pytest

from engine.ablations import TABLE4, TABLE5_LAMBDAS, ablation_rows
from engine.config import resolve
from engine.errors import ConfigError
from lrfr_tui.reference import COLUMNS, paper_tables, reference_row
from lrfr_tui.runsdb import Store


def test_table4_rows_are_the_papers_configurations():
    by_label = {row.label: resolve("r34", list(row.overrides)) for row in TABLE4}
    assert list(by_label) == ["Baseline", "Aug", "MAug", "PAug + Ours(1)", "Aug + L1", "Aug + Ours(1)",
                              "MAug + Ours(1)", "Aug + L2", "Aug + Ours(2)", "MAug + Ours(2)"]
    assert by_label["Baseline"].augment.resolutions == [] and by_label["Baseline"].loss.distance == "none"
    assert by_label["Aug"].augment.resolutions == [14] and by_label["Aug"].loss.distance == "none"
    assert by_label["PAug + Ours(1)"].augment.resolutions == [7, 14, 28, 56]
    assert (by_label["MAug + Ours(2)"].loss.distance, by_label["MAug + Ours(2)"].loss.p) == ("logexp", 2.0)
    assert by_label["MAug + Ours(1)"].augment.weights == [1.0, 1.0, 2.0]


def test_table6_ratios_and_table5_lambdas():
    rows = {r.label: resolve("tiny", list(r.overrides)) for r in ablation_rows("table6")}
    assert rows["1:2:1"].augment.weights == [1.0, 2.0, 1.0] and rows["1:1:0"].augment.weights == [1.0, 1.0, 0.0]
    lambdas = [resolve("tiny", list(r.overrides)).loss.lambda_ for r in ablation_rows("table5")]
    assert lambdas == [float(x) for x in TABLE5_LAMBDAS]
    with pytest.raises(ConfigError, match="unknown ablation 'table9'"):
        ablation_rows("table9")


def test_reference_tables_parse_with_their_columns_mapped():
    tables = paper_tables()
    assert set(tables) == {f"table{i}" for i in range(1, 7)}
    assert reference_row("table4", "MAug + Ours(1)") == {"d1": 73.0, "d2": 96.0, "d3": 98.8, "avg": 89.3,
                                                           "XQLFW": 92.18, "LFW": 99.03}
    assert reference_row("table3", "Ours (Res34)")["XQLFW"] == 92.18
    assert reference_row("table2", "DCR (2018)")["rank-5"] is None  # printed as a dash
    assert tables["table5"].rows["lambda=5"] == {"XQLFW": 92.45, "LFW": 98.89}
    for key, table in tables.items():
        mapped = set(COLUMNS[key])
        assert mapped <= set(table.columns), key
    # Every Table 4 row label has a preset-free configuration in the ablation grid.
    assert set(tables["table4"].rows) == {row.label for row in TABLE4}


def test_ablate_queues_a_group(tmp_path):
    db = tmp_path / "runs.db"
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "ablate", "table4", "--base", "tiny", "--seeds", "2",
                           "--db", str(db), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    store = Store(db)
    runs = [store.get_run(i) for i in out["runs"]]
    assert len(runs) == 20 and {r.group_name for r in runs} == {out["group"]}
    assert {r.name for r in runs} == {row.label for row in TABLE4}
    assert sorted(r.config["train"]["seed"] for r in runs if r.name == "MAug") == [0, 1]
    assert all(r.status == "queued" for r in runs)
    # The CPU base keeps the grid short: SCface without fine-tuning, no TinyFace.
    assert runs[0].config["eval"]["scface_protocols"] == ["zero_shot"]
    assert "tinyface" not in runs[0].config["eval"]["benchmarks"]


def test_results_group_in_the_papers_layout_with_reference_rows(tmp_path):
    db = tmp_path / "runs.db"
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "ablate", "table4", "--base", "tiny", "--seeds", "2",
                           "--db", str(db), "--json"], capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout)
    store = Store(db)
    # Results as the worker would store them: two seeds per configuration.
    for run_id in out["runs"]:
        run = store.get_run(run_id)
        seed = run.config["train"]["seed"]
        store.add_results(run_id, [("lfw", "insightface_10fold", "acc", None, 0.90 + 0.02 * seed),
                                   ("xqlfw", "xqlfw_official", "acc", None, 0.80),
                                   ("scface", "zero_shot", "rank1_d1", None, 0.50)])
        store.mark_ended(run_id, "finished", 0)
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "results", "--group", out["group"], "--db", str(db),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    layout = json.loads(proc.stdout)
    assert layout["table"] == "table4"
    assert [r["label"] for r in layout["rows"]] == [row.label for row in TABLE4]
    lfw = layout["columns"].index(next(c for c in layout["columns"] if c.startswith("lfw")))
    maug = next(r for r in layout["rows"] if r["label"] == "MAug + Ours(1)")
    assert maug["mean"][lfw] == pytest.approx(0.91) and maug["std"][lfw] == pytest.approx(0.0141421, rel=1e-4)
    # Delta to the published "MAug + Ours(1)" row: LFW 99.03 %.
    assert maug["delta_to_paper"][lfw] == pytest.approx(0.91 - 0.9903)
    refs = {r["label"] for r in layout["reference_rows"]}
    assert "paper 4: MAug + Ours(1)" in refs and "paper 4: Baseline" in refs
    human = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "results", "--group", out["group"], "--db", str(db)],
                           capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                             "COLUMNS": "200"})
    assert "paper 4: MAug + Ours(1)" in human.stdout and "±" in human.stdout


def test_exports_carry_the_published_rows(tmp_path):
    db = tmp_path / "runs.db"
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "ablate", "table4", "--base", "tiny", "--db", str(db),
                           "--json"], capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout)
    store = Store(db)
    for run_id in out["runs"]:
        store.add_results(run_id, [("lfw", "insightface_10fold", "acc", None, 0.95)])
        store.mark_ended(run_id, "finished", 0)
    for fmt, needle in (("markdown", "| *paper 4: MAug + Ours(1)* | 99.03 |"),
                        ("latex", r"\textit{paper 4: Baseline} & \textit{99.42}"),
                        ("csv", ",paper 4: Aug,98.65")):
        proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "export", "--format", fmt, "--group", out["group"],
                               "--db", str(db)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert needle in proc.stdout, proc.stdout
