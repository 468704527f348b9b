"""The benchmark suite end to end on the synthetic stand-ins, read back through the real readers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import resolve
from engine.data.pairs import load_pairs_tree
from engine.data.standins import materialise_standins
from engine.evaluate import run_benchmarks
from engine.evaluate.embeddings import embed
from engine.evaluate.verification import insightface_verification
from engine.reporting import Reporter
from engine.sources import cache_root
from engine.train import build_backbone
from tests.conftest import MICRO_OVERRIDES


class Results(Reporter):
    def __init__(self) -> None:
        self.rows: dict[tuple, float] = {}
        self.artifacts: list[Path] = []
        self.events: list[str] = []

    def result(self, benchmark, protocol, metric, resolution, value):
        self.rows[(benchmark, protocol, metric, resolution)] = value

    def artifact(self, kind, path):
        self.artifacts.append(Path(path))

    def event(self, kind, message, **fields):
        self.events.append(kind)


@pytest.fixture
def micro_model(micro_config):
    torch.manual_seed(0)
    return build_backbone(micro_config).eval()


def test_every_benchmark_reports_its_protocols(micro_config, micro_model, tmp_path):
    micro_config.eval.benchmarks = ["lfw", "xqlfw", "scface", "tinyface", "lowres_lfw"]
    micro_config.eval.tinyface_finetune = True
    rec = Results()
    run_benchmarks(micro_model, micro_config, "cpu", rec, run_dir=tmp_path)
    keys = {(b, p, m) for b, p, m, _ in rec.rows}
    expected = {
        ("lfw", "insightface_10fold", "acc"), ("lfw", "insightface_10fold", "acc_stderr"),
        ("xqlfw", "xqlfw_official", "acc"), ("xqlfw", "xqlfw_official", "threshold"),
        ("scface", "zero_shot", "rank1_d1"), ("scface", "zero_shot", "rank1_mean"),
        ("scface", "finetune", "rank1_d3"), ("tinyface", "no_finetune", "rank1"), ("tinyface", "no_finetune", "mAP"),
        ("tinyface", "finetune", "rank20"), ("lowres_lfw", "insightface_10fold_second", "acc"),
        ("lowres_lfw", "insightface_10fold_second", "ssim"),
    }
    assert expected <= keys, expected - keys
    accuracies = [v for (b, p, m, r), v in rec.rows.items() if m in ("acc", "rank1", "mAP")]
    assert all(0.0 <= v <= 1.0 for v in accuracies)
    assert {r for b, _, _, r in rec.rows if b == "lowres_lfw"} == {32, 8}
    # SSIM is 1 at HR and drops at 8 px.
    ssim = {r: v for (b, p, m, r), v in rec.rows.items() if m == "ssim"}
    assert ssim[32] == 1.0 and ssim[8] < 0.95
    # The DCR split is saved, disjoint and seeded; fine-tuning really trained.
    split = json.loads((tmp_path / "scface_split.json").read_text())
    assert not set(split["train_ids"]) & set(split["test_ids"]) and split["seed"] == 0
    assert (tmp_path / "finetune-scface" / "checkpoint.pt").exists()
    assert "finetune" in rec.events


def test_lowres_curve_at_hr_equals_plain_evaluation(micro_config, micro_model):
    micro_config.eval.benchmarks = ["lowres_lfw"]
    rec = Results()
    run_benchmarks(micro_model, micro_config, "cpu", rec)
    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    pairs = load_pairs_tree(paths["lfw"], paths["lfw"] / "pairs.txt", size=32)
    emb = embed(micro_model, pairs.images, "cpu")
    direct = insightface_verification(emb[0::2], emb[1::2], pairs.issame)
    assert rec.rows[("lowres_lfw", "insightface_10fold_second", "acc", 32)] == pytest.approx(direct.accuracy)


def test_random_mode_saves_its_sizes(tmp_path):
    cfg = resolve("tiny", MICRO_OVERRIDES + ["eval.lowres_mode=random", "eval.benchmarks=[lowres_lfw]",
                                             "eval.resolutions=[8,12,16]"])
    rec = Results()
    run_benchmarks(build_backbone(cfg), cfg, "cpu", rec, run_dir=tmp_path)
    sizes = json.loads((tmp_path / "lowres_lfw_random_sizes.json").read_text())
    assert set(sizes["first"]) | set(sizes["second"]) <= {8, 12, 16}
    assert ("lowres_lfw", "insightface_10fold_random", "acc", None) in rec.rows


def test_catalog_source_needs_registered_datasets(micro_config, micro_model):
    from engine.errors import DatasetError

    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["xqlfw"]
    with pytest.raises(DatasetError, match="dataset 'xqlfw' is not registered; register it with `lrfr data add xqlfw"):
        run_benchmarks(micro_model, micro_config, "cpu", Results())


def test_registered_real_format_datasets_are_used(micro_config, micro_model):
    """Register the stand-ins as a user would register the real sets, then evaluate from the catalog."""
    from engine.catalog import register

    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    register("lfw", paths["lfw_bin"])
    register("xqlfw", paths["xqlfw"])
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["lfw", "xqlfw"]
    rec = Results()
    run_benchmarks(micro_model, micro_config, "cpu", rec)
    synthetic = Results()
    micro_config.eval.source = "synthetic"
    run_benchmarks(micro_model, micro_config, "cpu", synthetic)
    for key in [("lfw", "insightface_10fold", "acc", None), ("xqlfw", "xqlfw_official", "acc", None)]:
        assert rec.rows[key] == synthetic.rows[key]
    assert np.isfinite(list(rec.rows.values())).all()


def test_exported_programs_evaluate_like_the_module(micro_config, micro_model, tmp_path):
    """torch.export (.pt2) and TorchScript files give the embeddings the module gives."""
    from engine.evaluate.external import load_external_model

    x = torch.zeros(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=4096)  # exported programs need a dynamic batch dimension
    exported = torch.export.export(micro_model, (x,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(exported, str(tmp_path / "m.pt2"))
    torch.jit.script(micro_model).save(str(tmp_path / "m.ts"))
    micro_config.eval.benchmarks = ["lfw"]
    reference = Results()
    run_benchmarks(micro_model, micro_config, "cpu", reference)
    for name in ("m.pt2", "m.ts"):
        rec = Results()
        run_benchmarks(load_external_model(tmp_path / name, input_size=micro_config.model.input_size), micro_config, "cpu", rec)
        key = ("lfw", "insightface_10fold", "acc", None)
        assert rec.rows[key] == pytest.approx(reference.rows[key], abs=1e-6), name


def test_external_model_errors(tmp_path):
    from engine.errors import LrfrError
    from engine.evaluate.external import load_external_model

    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(LrfrError, match="cannot load"):
        load_external_model(tmp_path / "junk.pt")
    with pytest.raises(LrfrError, match="does not exist"):
        load_external_model(tmp_path / "nope.pt2")
