"""Issue 10, item 8: one benchmark's failure is recorded as that benchmark's and the others still run;
a benchmark protocol runs on any registered dataset of its format (``xqlfw=my_pairs``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine.catalog import register
from engine.config import resolve, validate
from engine.data.pairs import PairEntry, write_pairs
from engine.data.standins import materialise_standins
from engine.errors import ConfigError, DatasetError, LrfrError
from engine.evaluate import BenchmarksFailed, parse_benchmark, result_names, run_benchmarks
from engine.evaluate import benchmarks as bench_module
from engine.reporting import Reporter
from engine.sources import cache_root
from engine.train import build_backbone
from tests.test_benchmark_data import make_tree


class Recorder(Reporter):
    """Every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def event(self, kind, message, **fields):
        self.calls.append(("event", kind, message, fields))

    def result(self, benchmark, protocol, metric, resolution, value):
        self.calls.append(("result", benchmark, protocol, metric, resolution, value))

    def artifact(self, kind, path):
        self.calls.append(("artifact", kind, Path(path)))

    @property
    def rows(self) -> dict[tuple, float]:
        return {c[1:5]: c[5] for c in self.calls if c[0] == "result"}

    def events(self, kind: str) -> list[tuple[str, dict]]:
        return [(c[2], c[3]) for c in self.calls if c[0] == "event" and c[1] == kind]


@pytest.fixture
def micro_model(micro_config):
    torch.manual_seed(0)
    return build_backbone(micro_config).eval()


# ---------------------------------------------------------------- one failure does not end the evaluation


def _ok(label: str):
    def bench(ctx):
        ctx.report(label, "proto", {"acc": 0.5})
    return bench


FAILURES = {
    "dataset": DatasetError("dataset 'boom' is not registered"),
    "host_oom": MemoryError("cannot allocate 30 GB"),
    "cuda_oom": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 GiB"),
    "cpu_allocator": RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                                  "memory: you tried to allocate 31000000000 bytes."),
    "unreadable": PermissionError(13, "Permission denied", "/data/lfw/pairs.txt"),
}


@pytest.fixture
def fake_benchmarks(monkeypatch):
    """Registers ok_a, boom and ok_b as benchmarks for the test; ``boom`` raises ``raised[0]``."""
    raised: list[BaseException] = []

    def boom(ctx):
        ctx.report("boom", "proto", {"partial": 1.0})  # what it reported before failing is kept too
        raise raised[0]

    for name, fn in {"ok_a": _ok("ok_a"), "boom": boom, "ok_b": _ok("ok_b")}.items():
        monkeypatch.setitem(bench_module.BENCHMARKS, name, fn)
    return raised


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_benchmark_is_reported_and_the_next_ones_run(micro_config, fake_benchmarks, failure):
    fake_benchmarks.append(FAILURES[failure])
    micro_config.eval.benchmarks = ["ok_a", "boom", "ok_b"]
    rec = Recorder()
    with pytest.raises(BenchmarksFailed) as err:
        run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", rec)
    assert isinstance(err.value, LrfrError)  # the worker records LrfrError as the run's failure reason
    assert rec.rows == {("ok_a", "proto", "acc", None): 0.5, ("boom", "proto", "partial", None): 1.0,
                        ("ok_b", "proto", "acc", None): 0.5}
    [(message, fields)] = rec.events("benchmark_failed")
    assert fields["benchmark"] == "boom" and message.startswith("boom failed: ")
    assert str(FAILURES[failure]) in message or str(FAILURES[failure].args[0]) in message
    if failure.endswith("oom") or failure == "cpu_allocator":
        assert "out of memory" in message
    # In order: boom's failure is reported, then ok_b is still evaluated.
    failed_at = next(i for i, c in enumerate(rec.calls) if c[:2] == ("event", "benchmark_failed"))
    ok_b_at = next(i for i, c in enumerate(rec.calls) if c[:2] == ("result", "ok_b"))
    assert failed_at < ok_b_at
    assert err.value.failures.keys() == {"boom"} and err.value.succeeded == ["ok_a", "ok_b"]
    text = str(err.value)
    assert text.startswith("1 of 3 benchmarks failed (the results of ok_a, ok_b are kept): boom: ")


def test_every_failure_is_named_and_bugs_are_not_swallowed(micro_config, fake_benchmarks, monkeypatch):
    def missing(ctx):
        raise DatasetError("dataset 'other' is not registered")

    monkeypatch.setitem(bench_module.BENCHMARKS, "other", missing)
    fake_benchmarks.append(DatasetError("x" * 2000))  # long messages are shortened in the summary
    micro_config.eval.benchmarks = ["boom", "ok_a", "other"]
    with pytest.raises(BenchmarksFailed, match=r"^2 of 3 benchmarks failed \(the results of ok_a are kept\): "
                                               r"boom: x+\.\.\.; other: dataset 'other' is not registered$"):
        run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", Recorder())
    # A bug (not the data, not the machine) stops the evaluation with its own traceback.
    fake_benchmarks[0] = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    rec = Recorder()
    micro_config.eval.benchmarks = ["boom", "ok_a"]
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", rec)
    assert ("ok_a", "proto", "acc", None) not in rec.rows and not rec.events("benchmark_failed")


def test_a_single_benchmark_raises_its_own_error(micro_config, fake_benchmarks):
    fake_benchmarks.append(DatasetError("dataset 'boom' is not registered"))
    micro_config.eval.benchmarks = ["boom"]
    rec = Recorder()
    with pytest.raises(DatasetError, match="^dataset 'boom' is not registered$"):
        run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", rec)
    assert [f["benchmark"] for _, f in rec.events("benchmark_failed")] == ["boom"]


def test_real_benchmarks_around_a_missing_dataset(micro_config, micro_model):
    """lfw and xqlfw registered, tinyface not: its failure is recorded, both others' numbers are kept."""
    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    register("lfw", paths["lfw_bin"])
    register("xqlfw", paths["xqlfw"])
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["lfw", "tinyface", "xqlfw"]
    rec = Recorder()
    with pytest.raises(BenchmarksFailed, match="1 of 3 benchmarks failed .*: tinyface: dataset 'tinyface' is "
                                               "not registered"):
        run_benchmarks(micro_model, micro_config, "cpu", rec)
    assert ("lfw", "insightface_10fold", "acc", None) in rec.rows
    assert ("xqlfw", "xqlfw_official", "acc", None) in rec.rows
    assert [f["benchmark"] for _, f in rec.events("benchmark_failed")] == ["tinyface"]


def test_an_evaluation_run_with_a_failed_benchmark_ends_failed_with_its_results(micro_config, micro_model,
                                                                               tmp_path):
    from engine.config import flatten, to_dict
    from lrfr_tui.runsdb import Store
    from lrfr_tui.worker import evaluate_into_run

    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    register("lfw", paths["lfw_bin"])
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["lfw", "xqlfw"]
    db = tmp_path / "runs.db"
    store = Store(db, create=True)
    run_id = store.create_run(to_dict(micro_config), flatten(micro_config), "lrfr eval", status="running",
                              pid=os.getpid(), launcher="eval")
    with pytest.raises(LrfrError, match="1 of 2 benchmarks failed .*xqlfw: dataset 'xqlfw' is not registered"):
        evaluate_into_run(db, run_id, micro_model, micro_config, "cpu", finish_run=True)
    store = Store(db)
    run = store.get_run(run_id)
    assert run.status == "failed" and "xqlfw" in run.failure_reason and "results of lfw are kept" in \
        run.failure_reason
    assert {r["benchmark"] for r in store.results(run_id)} == {"lfw"}


# ---------------------------------------------------------------- a benchmark on another registered dataset


def test_benchmark_entries_parse_and_validate():
    assert parse_benchmark("xqlfw") == parse_benchmark("xqlfw=xqlfw")
    spec = parse_benchmark("xqlfw=my_pairs")
    assert (spec.kind, spec.dataset, spec.name, spec.catalog_entry) == ("xqlfw", "my_pairs", "xqlfw:my_pairs",
                                                                        "my_pairs")
    assert parse_benchmark("lowres_lfw=lfw").name == "lowres_lfw"
    assert parse_benchmark("lowres_lfw").catalog_entry == "lfw"
    assert result_names(["lfw", "xqlfw=my_pairs", " tinyface = tf.v2 "]) == ["lfw", "xqlfw:my_pairs",
                                                                              "tinyface:tf.v2"]
    cfg = resolve("tiny", ["eval.source=catalog", "eval.benchmarks=[xqlfw=my_pairs,lfw]"])
    assert cfg.eval.benchmarks == ["xqlfw=my_pairs", "lfw"]
    for bad, message in [("nope=my_pairs", "unknown benchmark 'nope' in 'nope=my_pairs'"),
                         ("xqlfw=", "is not BENCHMARK=DATASET"), ("xqlfw=a b", "is not BENCHMARK=DATASET"),
                         ("xqlfw=a=b", "is not BENCHMARK=DATASET"), ("=my_pairs", "unknown benchmark ''")]:
        with pytest.raises(ConfigError, match=message):
            resolve("tiny", ["eval.source=catalog", f"eval.benchmarks=[{bad}]"])
    cfg.eval.source = "synthetic"
    with pytest.raises(ConfigError, match="names a catalog dataset, but eval.source=synthetic"):
        validate(cfg)


NAMES = [f"Id{k}_X" for k in range(6)]
MY_ENTRIES = [  # 2 folds x (5 matched + 5 mismatched): the 10-fold protocol needs 10 pairs
    entry for fold in range(2) for entry in
    [PairEntry.matched(NAMES[(fold + k) % 6], 1 + fold, 3) for k in range(5)]
    + [PairEntry.mismatched(NAMES[k], 1 + fold, NAMES[(k + 1 + fold) % 6], 2) for k in range(5)]
]


def _pairs_tree(root: Path) -> Path:
    """An LFW-layout tree (6 ids x 3 images) with its pairs file named my_pairs.txt."""
    make_tree(root, dict.fromkeys(NAMES, 3))
    write_pairs(root / "my_pairs.txt", 2, 5, MY_ENTRIES)
    return root


def test_xqlfw_protocol_on_another_registered_pairs_set(micro_config, micro_model, tmp_path):
    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    register("xqlfw", paths["xqlfw"])
    register("my_pairs", _pairs_tree(tmp_path / "mine"), "pairs")
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["xqlfw=my_pairs", "xqlfw"]
    rec = Recorder()
    run_benchmarks(micro_model, micro_config, "cpu", rec, run_dir=tmp_path / "run")
    # The real XQLFW keeps its name; the other set is reported as its own benchmark, same protocols.
    assert {k[0] for k in rec.rows} == {"xqlfw", "xqlfw:my_pairs"}
    protocols = {k[:3] for k in rec.rows}
    for bench in ("xqlfw", "xqlfw:my_pairs"):
        assert {(bench, "xqlfw_official", "acc"), (bench, "insightface_10fold", "acc")} <= protocols
    assert [f["benchmark"] for _, f in rec.events("evaluate")] == ["xqlfw:my_pairs", "xqlfw"]
    # It really read my_pairs (20 pairs in the 2 folds its header gives), not the XQLFW stand-in.
    from engine.data.pairs import load_pairs_tree
    from engine.evaluate.embeddings import embed
    from engine.evaluate.verification import xqlfw_verification

    mine = load_pairs_tree(tmp_path / "mine", tmp_path / "mine" / "my_pairs.txt", size=32)
    emb = embed(micro_model, mine.images, "cpu")
    direct = xqlfw_verification(emb[0::2], emb[1::2], mine.issame, mine.folds)  # the header: 2 folds
    assert rec.rows[("xqlfw:my_pairs", "xqlfw_official", "acc", None)] == pytest.approx(direct.accuracy)
    assert rec.rows[("xqlfw:my_pairs", "xqlfw_official", "threshold", None)] == pytest.approx(direct.threshold)


def test_lowres_and_lfw_on_another_pairs_set(micro_config, micro_model, tmp_path):
    register("small_lfw", _pairs_tree(tmp_path / "mine"), "pairs")
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["lfw=small_lfw", "lowres_lfw=small_lfw"]
    rec = Recorder()
    run_benchmarks(micro_model, micro_config, "cpu", rec)
    assert {k[0] for k in rec.rows} == {"lfw:small_lfw", "lowres_lfw:small_lfw"}
    assert {k[3] for k in rec.rows if k[0] == "lowres_lfw:small_lfw"} == {32, 8}
    assert 0.0 < rec.rows[("lowres_lfw:small_lfw", "insightface_10fold_second", "ssim", 8)] < 1.0
    # Files a protocol keeps go to the entry's own folder, not over those of lowres_lfw on LFW.
    micro_config.eval.lowres_mode = "random"
    micro_config.eval.benchmarks = ["lowres_lfw=small_lfw"]
    run_benchmarks(micro_model, micro_config, "cpu", Recorder(), run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "lowres_lfw=small_lfw" / "lowres_lfw_random_sizes.json").is_file()
    assert not (tmp_path / "run" / "lowres_lfw_random_sizes.json").exists()


def test_a_dataset_of_the_wrong_format_is_named(micro_config, micro_model, tmp_path):
    (tmp_path / "faces" / "a").mkdir(parents=True)
    register("faces", tmp_path / "faces", "folder")
    register("my_pairs", _pairs_tree(tmp_path / "mine"), "pairs")
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["xqlfw=faces", "tinyface=my_pairs", "scface=nowhere"]
    rec = Recorder()
    with pytest.raises(BenchmarksFailed) as err:
        run_benchmarks(micro_model, micro_config, "cpu", rec)
    why = err.value.failures
    assert why.keys() == {"xqlfw:faces", "tinyface:my_pairs", "scface:nowhere"}
    assert why["xqlfw:faces"] == ("xqlfw=faces: dataset 'faces' is registered as format 'folder', but the xqlfw "
                                  "benchmark reads 'bin' or 'pairs'; register one of that format (`lrfr data "
                                  "add NAME PATH --format bin`)")
    assert "dataset 'my_pairs' is registered as format 'pairs', but the tinyface benchmark reads 'tinyface'" \
        in why["tinyface:my_pairs"]
    assert "dataset 'nowhere' is not registered" in why["scface:nowhere"]
    assert not rec.rows
