"""The torch-free benchmark registry (engine.evaluate.registry): what it declares is what the runnable
benchmarks produce, engine.config validates against it, and its metric rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import catalog
from engine.config import CHOICES, resolve, validate
from engine.data import scface as scface_data
from engine.errors import ConfigError
from engine.evaluate import benchmarks as bench_module
from engine.evaluate import registry, run_benchmarks
from engine.reporting import Reporter
from engine.train import build_backbone

ROOT = Path(__file__).resolve().parent.parent
PAPER_ORDER = ("lfw", "xqlfw", "scface", "tinyface", "lowres_lfw")


def test_the_registry_and_config_import_without_torch_or_numpy():
    code = ("import sys\n"
            "import engine.evaluate.registry, engine.config, engine.evaluate\n"
            "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "from engine.evaluate.registry import benchmark_info\n"
            "print(benchmark_info('scface').label)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SCface"


def test_declarations_in_paper_order():
    assert registry.benchmark_names() == PAPER_ORDER
    assert [b.label for b in registry.benchmarks()] == ["LFW", "XQLFW", "SCface", "TinyFace", "LR-LFW"]
    lfw, xqlfw, scface, tinyface, lowres = registry.benchmarks()
    assert lfw.protocols == ("insightface_10fold", "roc")
    assert xqlfw.protocols == ("xqlfw_official", "insightface_10fold")
    assert scface.protocols == ("zero_shot", "finetune", "zero_shot_all130")
    assert tinyface.protocols == ("no_finetune", "finetune")
    assert lowres.protocols == ("insightface_10fold_second", "insightface_10fold_both", "insightface_10fold_random")
    assert [(b.headline_metrics, b.headline_single_protocol) for b in registry.benchmarks()] == [
        (("acc",), True), (("acc",), True), (("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean"), False),
        (("rank1", "mAP"), False), (("acc",), False)]
    assert (lowres.default_dataset, lfw.default_dataset) == ("lfw", "lfw")
    with pytest.raises(AttributeError):
        lfw.label = "other"  # frozen


def test_lookups_by_name_and_result_name():
    assert registry.benchmark_info("xqlfw:my_pairs") is registry.benchmark_info("xqlfw")
    assert registry.find_benchmark("nope") is None
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        registry.benchmark_info("nope")
    # Only the real benchmark gets its label: another dataset's results keep their name.
    assert registry.benchmark_label("lowres_lfw") == "LR-LFW"
    assert registry.benchmark_label("xqlfw:my_pairs") == "xqlfw:my_pairs"
    assert registry.preferred_protocols("xqlfw:my_pairs") == ("xqlfw_official", "insightface_10fold")
    assert registry.preferred_protocols("nope") == ()
    names = ["zz", "lowres_lfw", "xqlfw:my_pairs", "lfw", "scface"]
    assert sorted(names, key=registry.benchmark_rank) == ["lfw", "scface", "lowres_lfw", "xqlfw:my_pairs", "zz"]
    protocols = ["zero_shot_all130", "other", "finetune", "zero_shot"]
    assert sorted(protocols, key=lambda p: registry.protocol_rank("scface", p)) == [
        "zero_shot", "finetune", "zero_shot_all130", "other"]


def test_the_runnable_benchmarks_are_the_declared_ones():
    assert tuple(bench_module.BENCHMARKS) == PAPER_ORDER
    assert registry.BENCHMARK_NAMES == tuple(sorted(PAPER_ORDER))
    for info in registry.benchmarks():
        assert set(info.formats) <= set(catalog.FORMATS), info.name
    # The config's choices and the data module's protocol names are the declared protocols.
    assert set(registry.benchmark_info("scface").protocols) == set(scface_data.PROTOCOLS)
    assert registry.benchmark_info("lowres_lfw").protocols == tuple(
        f"insightface_10fold_{mode}" for mode in CHOICES["eval.lowres_mode"])
    # A runner must name a declared benchmark, once.
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        bench_module.benchmark_runner("nope")
    with pytest.raises(KeyError, match="already runs"):
        bench_module.benchmark_runner("lfw")(lambda ctx: None)
    with pytest.raises(KeyError, match="never registered with benchmark_runner: extra"):
        bench_module._runnable((*registry.benchmarks(),
                                registry.BenchmarkInfo("extra", "Extra", "verification", "", ("p",), ("acc",),
                                                       True, ("bin",))))


class _Rows(Reporter):
    def __init__(self) -> None:
        self.rows: dict[tuple, float] = {}

    def result(self, benchmark, protocol, metric, resolution, value):
        self.rows[(benchmark, protocol, metric, resolution)] = value


def test_every_protocol_the_benchmarks_write_is_declared(micro_config, tmp_path):
    """Every benchmark, with every protocol switched on, on the synthetic stand-ins: the protocols reported
    are exactly the declared ones, each reports its headline metrics, and a percentage is a fraction."""
    torch.manual_seed(0)
    model = build_backbone(micro_config).eval()
    micro_config.eval.scface_protocols = list(scface_data.PROTOCOLS)
    micro_config.eval.tinyface_finetune = True
    rows: dict[tuple, float] = {}
    for mode in CHOICES["eval.lowres_mode"]:
        micro_config.eval.lowres_mode = mode
        micro_config.eval.benchmarks = list(PAPER_ORDER) if mode == "second" else ["lowres_lfw"]
        rec = _Rows()
        run_benchmarks(model, micro_config, "cpu", rec, run_dir=tmp_path / mode)
        rows.update(rec.rows)
    for info in registry.benchmarks():
        written = {p for b, p, _, _ in rows if b == info.name}
        assert written == set(info.protocols), info.name
        protocols = info.protocols[:1] if info.headline_single_protocol else info.protocols
        for protocol in protocols:
            metrics = {m for b, p, m, _ in rows if (b, p) == (info.name, protocol)}
            assert set(info.headline_metrics) <= metrics, (info.name, protocol)
    assert {b for b, _, _, _ in rows} == set(PAPER_ORDER)
    percents = {k: v for k, v in rows.items() if registry.is_percent(k[2])}
    assert {m for _, _, m, _ in percents} >= {"acc", "acc_std", "rank1_d1", "rank5_mean", "mAP", "val@far=1e-3"}
    assert all(0.0 <= v <= 1.0 for v in percents.values()), {k: v for k, v in percents.items() if not 0 <= v <= 1}
    others = {m for _, _, m, _ in rows} - {m for _, _, m, _ in percents}
    assert others == {"threshold", "ssim"}


def test_config_rejects_unknown_benchmarks_and_protocols():
    cfg = resolve("tiny", ["eval.benchmarks=[lowres_lfw, xqlfw]", "eval.scface_protocols=[zero_shot_all130]"])
    assert cfg.eval.benchmarks == ["lowres_lfw", "xqlfw"]
    with pytest.raises(ConfigError, match=r"^eval.benchmarks: unknown benchmark 'lfw2'; choose from: "
                                          r"lfw, lowres_lfw, scface, tinyface, xqlfw$"):
        resolve("tiny", ["eval.benchmarks=[lfw, lfw2]"])
    with pytest.raises(ConfigError, match=r"^eval.scface_protocols=\['zero_shot', 'rank1'\] is not valid: use any "
                                          r"of zero_shot \(80 DCR test ids\), finetune, zero_shot_all130$"):
        resolve("tiny", ["eval.scface_protocols=[zero_shot, rank1]"])
    with pytest.raises(ConfigError, match=r"^eval.lowres_mode='first' is not valid; choose one of: "
                                          r"second, both, random$"):
        resolve("tiny", ["eval.lowres_mode=first"])
    cfg.eval.benchmarks = ["tinyface=tf_v2"]
    with pytest.raises(ConfigError, match="names a catalog dataset, but eval.source="):
        validate(cfg)


@pytest.mark.parametrize(("metric", "percent", "better", "label"), [
    ("acc", True, 1, "acc"),
    ("acc_std", True, -1, "acc_std"),
    ("acc_stderr", True, -1, "acc_stderr"),
    ("acc_ci95_lo", True, 1, "acc_ci95_lo"),
    ("rank1_d1", True, 1, "d1"),
    ("rank1_mean", True, 1, "avg"),
    ("rank1", True, 1, "rank-1"),
    ("rank5", True, 1, "rank-5"),
    ("mAP", True, 1, "mAP"),
    ("val@far=1e-3", True, 1, "val@far=1e-3"),
    ("tar@far=1e-04_conservative", True, 1, "tar@far=1e-04_conservative"),
    ("threshold", False, 0, "threshold"),
    ("threshold_std", False, -1, "threshold_std"),  # a spread: checked before the threshold rule
    ("ssim", False, 1, "ssim"),
    ("loss_dist", False, -1, "loss_dist"),
    ("eer", False, -1, "eer"),
    ("map", False, 1, "map"),  # only mAP, as the benchmarks spell it
])
def test_metric_rules(metric, percent, better, label):
    info = registry.metric_info(metric)
    assert (info.percent, info.better, info.label) == (percent, better, label)
    assert registry.is_percent(metric) is percent
    assert registry.better_direction(metric) == better
    assert registry.metric_label(metric) == label
