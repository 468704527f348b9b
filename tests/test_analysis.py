"""engine.analysis and `lrfr analyze`: every figure is drawn with its data, and the data is right.

One 32-px micro checkpoint is trained per module (3 steps on the synthetic faces) and analysed on the
test-size benchmark stand-ins.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import checkpoint as ckpt
from engine.analysis import (
    FIGURES,
    AnalysisOptions,
    gradient_norms,
    load_model,
    load_pairs,
    loss_gradients,
    make_figure,
    resolution_sweep,
    resolvable_far,
    training_faces,
)
from engine.augment import degrade
from engine.config import flatten, resolve, to_dict
from engine.errors import LrfrError
from engine.evaluate import run_benchmarks
from engine.evaluate.embeddings import embed
from engine.evaluate.verification import insightface_verification
from engine.losses import build_distance_loss
from engine.reporting import Reporter
from lrfr_tui import cli_analyze
from lrfr_tui.runsdb import Store
from tests.conftest import MICRO_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these 32-px models gain nothing from two, and when the 2 cores are shared
    with other work, OpenMP threads spinning at barriers made this module 4x slower (100 s vs 23 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cache_dir) -> Path:
    from engine.train import train

    run_dir = tmp_path_factory.mktemp("analysis-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LRFR_CACHE", str(cache_dir))
        mp.setenv("LRFR_CATALOG", str(run_dir / "catalog.json"))
        cfg = resolve("tiny", MICRO_OVERRIDES + ["schedule.max_steps=3", "eval.benchmarks=[lfw]"])
        return train(cfg, run_dir).checkpoint


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint, "micro")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------ every figure


@pytest.mark.parametrize("name", list(FIGURES))
def test_each_figure_writes_a_png_and_its_data(name, model, tmp_path):
    options = AnalysisOptions(faces=24, gradnorm_images=16)
    files = make_figure(name, [model], tmp_path, options)
    assert files.png == tmp_path / f"{name}.png"
    assert files.png.read_bytes()[:8] == PNG_MAGIC and files.png.stat().st_size > 5000
    assert files.data, "every figure writes the data behind it"
    for path in files.data:
        assert path.parent == tmp_path and path.stem == name and path.stat().st_size > 0
        if path.suffix == ".csv":
            assert len(_read_csv(path)) > 0
        else:
            assert json.loads(path.read_text())


def test_pca_is_sklearns_up_to_sign():
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    from engine.analysis.embedding import project

    points = np.random.default_rng(0).normal(size=(50, 12)) * np.linspace(3, 0.5, 12)
    coords, explained = project(points, "pca")
    with threadpool_limits(limits=1):  # scikit-learn's own BLAS threads would slow torch down afterwards
        reference = PCA(n_components=2).fit(points)
    expected = reference.transform(points)
    signs = np.sign(np.sum(coords * expected, axis=0))
    assert np.allclose(coords, expected * signs, atol=1e-9)
    assert np.allclose(explained, reference.explained_variance_ratio_)


def test_embedding_tsne_and_centres(model, tmp_path):
    files = make_figure("embedding", [model], tmp_path, AnalysisOptions(method="tsne", faces=12))
    summary = json.loads((tmp_path / "embedding.json").read_text())[0]
    # HR, 42 (>= 32 px: HR again), 28, 20, 14, 7 -> five distinct sizes, HR first.
    assert [r["resolution_px"] for r in summary["resolutions"]] == [32, 28, 20, 14, 7]
    assert summary["method"] == "tsne" and summary["faces"] == 12
    assert summary["resolutions"][0]["mean_cos_to_hr"] == pytest.approx(1.0, abs=1e-5)
    points = _read_csv(files.data[0])
    assert len(points) == 5 * 12
    # Each centre is the mean of its resolution's points.
    for entry in summary["resolutions"]:
        xs = [(float(p["x"]), float(p["y"])) for p in points if int(p["resolution_px"]) == entry["resolution_px"]]
        assert np.allclose(np.mean(xs, axis=0), entry["centre"], atol=1e-4)


# ------------------------------------------------------------------------------ the data is right


class _Results(Reporter):
    def __init__(self) -> None:
        self.rows: dict[tuple, float] = {}

    def result(self, benchmark, protocol, metric, resolution, value):
        self.rows[(benchmark, metric, resolution)] = value


def test_resolution_curve_equals_plain_and_benchmark_evaluation(model):
    pairs = load_pairs(model.cfg, "lowres_lfw")
    curve = resolution_sweep(model.backbone, pairs, [8, 32, 112], label="micro")
    assert curve.resolutions == [8, 32]  # 112 >= the 32 px input: HR, once
    e1 = embed(model.backbone, pairs.first, "cpu")
    e2 = embed(model.backbone, pairs.second, "cpu")
    plain = insightface_verification(e1, e2, pairs.issame)
    assert curve.accuracy[1] == plain.accuracy
    assert curve.threshold[1] == plain.threshold
    assert curve.ssim[1] == 1.0 and 0.0 < curve.ssim[0] < 1.0
    # The same numbers as the low-resolution LFW benchmark of the run's evaluation.
    cfg = copy.deepcopy(model.cfg)
    cfg.eval.benchmarks = ["lowres_lfw"]
    cfg.eval.resolutions = [32, 8]
    rec = _Results()
    run_benchmarks(model.backbone, cfg, "cpu", rec)
    assert rec.rows[("lowres_lfw", "acc", 32)] == curve.accuracy[1]
    assert rec.rows[("lowres_lfw", "acc", 8)] == curve.accuracy[0]
    assert rec.rows[("lowres_lfw", "ssim", 8)] == pytest.approx(curve.ssim[0], rel=1e-12)


def test_gradnorm_equals_direct_autograd(model, checkpoint):
    state = ckpt.load(checkpoint)
    assert torch.equal(model.head.weight.detach(), state["head"]["weight"])
    assert model.head.num_classes == state["num_classes"]
    images, labels = training_faces(model.cfg, 16, seed=1)
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 32, 32)
    curve = gradient_norms(model.backbone, model.head, images, labels, [8, 32], label="micro")
    assert curve.resolutions == [8, 32]
    assert all(p.grad is None for p in model.backbone.parameters())  # nothing left behind
    assert not model.backbone.training

    for index, r in enumerate(curve.resolutions):
        net = copy.deepcopy(model.backbone).eval()
        head = copy.deepcopy(model.head).eval()
        pixels = degrade(images, r) if r < 32 else images
        x = pixels.float() / 127.5 - 1.0
        feats = net(x)
        # CosFace written out: CE(s * (cos - m * onehot)).
        cos = F.normalize(feats, dim=1) @ F.normalize(head.weight, dim=1).T
        logits = head.s * (cos - head.m * F.one_hot(labels, head.num_classes))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        direct = sum(float(p.grad.norm()) for p in net.parameters() if p.grad is not None)
        assert curve.grad_norm[index] == pytest.approx(direct, rel=1e-4)
        assert curve.loss[index] == pytest.approx(float(loss.detach()), rel=1e-5)


def test_gradnorm_batches_average():
    torch.manual_seed(0)
    from engine.losses import CosFace
    from engine.models import get_model

    net = get_model("iresnet18", embedding_size=8, width=0.125, input_size=32).eval()
    head = CosFace(8, 4, s=16, m=0.1)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8) % 4
    whole = gradient_norms(net, head, images, labels, [16], batch_size=4)
    parts = [gradient_norms(net, head, images[i : i + 4], labels[i : i + 4], [16]).grad_norm[0] for i in (0, 4)]
    assert whole.per_batch[0] == pytest.approx(parts)
    assert whole.grad_norm[0] == pytest.approx(np.mean(parts))


def _eq4(d: float, p: float, c: float, dim: int) -> float:
    """The paper's Eq. 4 for coordinate i with difference d and remainder term C."""
    a = abs(d) ** p
    return (1.0 / (p * dim)) * p * abs(d) ** (p - 1) * np.sign(d) * np.exp(a) / (1.0 + np.expm1(a) + c)


def test_gradient_curves_are_the_losses_autograd_gradients_and_eq4(tmp_path):
    dim = 16
    d_values = np.linspace(-2.0, 2.0, 21)
    data = loss_gradients(d=d_values, dimension=dim, c_values=(0.0, 3.5, 40.0))
    names = {(c.loss, c.p, c.c) for c in data.curves}
    assert names == {("l1", 1.0, 0.0), ("l2", 1.0, 0.0)} | {("logexp", p, c) for p in (1.0, 2.0)
                                                             for c in (0.0, 3.5, 40.0)}
    for cur in data.curves:
        fn = build_distance_loss(cur.loss, p=cur.p)
        for k, d in enumerate(d_values):
            x = torch.zeros(1, dim)
            x[0, 0] = float(d)
            x[0, 1] = float(np.log1p(cur.c) ** (1.0 / cur.p))  # exp(|u|^p) - 1 = C
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x, torch.zeros(1, dim)), x)
            assert cur.grad[k] == pytest.approx(float(grad[0, 0]), rel=1e-5, abs=1e-9)
            if cur.loss == "logexp":
                assert cur.grad[k] == pytest.approx(_eq4(float(d), cur.p, cur.c, dim), rel=1e-5, abs=1e-9)
            elif cur.loss == "l1":
                assert cur.grad[k] == pytest.approx(np.sign(d) / dim, abs=1e-9)
            else:
                assert cur.grad[k] == pytest.approx(d / dim, rel=1e-5, abs=1e-9)
    # What the plot's CSV holds is exactly those gradients.
    make_figure("gradients", [], tmp_path, AnalysisOptions(dimension=dim, c_values=[0.0, 3.5, 40.0]))
    rows = _read_csv(tmp_path / "gradients.csv")
    full = loss_gradients(dimension=dim, c_values=(0.0, 3.5, 40.0))
    for cur in full.curves:
        mine = [r for r in rows if r["loss"] == cur.loss and float(r["p"]) == cur.p and float(r["C"]) == cur.c]
        assert np.array_equal([float(r["d"]) for r in mine], full.d)
        assert np.array_equal([float(r["grad"]) for r in mine], cur.grad)
        assert np.allclose([float(r["grad_times_D"]) for r in mine], cur.grad * dim)


def test_roc_far_target_and_tar(model, tmp_path):
    assert resolvable_far(3000) == 1e-3
    assert resolvable_far(30) == 1e-1
    assert resolvable_far(5) == 1.0
    make_figure("roc", [model], tmp_path)
    summary = json.loads((tmp_path / "roc.json").read_text())[0]
    assert summary["negatives"] == 30 and summary["far_target"] == 1e-1
    points = _read_csv(tmp_path / "roc.csv")
    fpr = np.array([float(p["fpr"]) for p in points])
    tpr = np.array([float(p["tpr"]) for p in points])
    assert summary["tar_conservative"] == tpr[fpr <= 0.1].max()


def test_dimerror_and_similarity_data(model, tmp_path):
    pairs = load_pairs(model.cfg, "lfw")
    make_figure("dimerror", [model], tmp_path, AnalysisOptions(resolution=8))
    rows = _read_csv(tmp_path / "dimerror.csv")
    assert len(rows) == model.cfg.model.embedding_size
    hr = embed(model.backbone, pairs.images, "cpu", flip_fuse=False)
    lr = embed(model.backbone, pairs.images, "cpu", resolution=8, flip_fuse=False)
    expected = np.abs(hr.astype(np.float64) - lr).mean(axis=0)
    assert np.allclose([float(r["mean_abs_error"]) for r in rows], expected, rtol=1e-6)

    make_figure("similarity", [model], tmp_path, AnalysisOptions(resolution=8))
    sims = _read_csv(tmp_path / "similarity.csv")
    e1 = embed(model.backbone, pairs.first, "cpu")
    e2 = embed(model.backbone, pairs.second, "cpu", resolution=8)
    assert np.allclose([float(r["cos_lr"]) for r in sims], np.sum(e1 * e2, axis=1), atol=1e-6)
    assert [r["issame"] == "True" for r in sims] == pairs.issame.tolist()


# ------------------------------------------------------------------------------ lrfr analyze


def _db_with_runs(tmp_path: Path, checkpoint: Path, model, count: int = 1, group: str | None = None) -> list[int]:
    store = Store(tmp_path / "runs.db")
    ids = []
    for _ in range(count):
        run_id = store.create_run(to_dict(model.cfg), flatten(model.cfg), "test", status="finished", group=group)
        target = tmp_path / "runs" / str(run_id) / "checkpoint.pt"
        target.parent.mkdir(parents=True)
        shutil.copy(checkpoint, target)
        ids.append(run_id)
    store.close()
    return ids


def test_cli_analyze_run_resolution(tmp_path, checkpoint, model):
    (run_id,) = _db_with_runs(tmp_path, checkpoint, model)
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "analyze", str(run_id), "--figure", "resolution",
                           "--db", str(tmp_path / "runs.db"), "--device", "cpu"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = tmp_path / "runs" / str(run_id) / "figures"
    printed = [Path(line) for line in proc.stdout.split()]
    assert printed == [figures / "resolution.png", figures / "resolution.csv"]
    assert all(p.stat().st_size > 0 for p in printed)
    artifacts = {(a["kind"], a["path"]) for a in Store(tmp_path / "runs.db").artifacts(run_id)}
    assert ("figure", str(figures / "resolution.png")) in artifacts
    assert ("figure_data", str(figures / "resolution.csv")) in artifacts
    # The run's own eval.resolutions (32, 8), and the numbers of a direct sweep.
    rows = _read_csv(figures / "resolution.csv")
    curve = resolution_sweep(model.backbone, load_pairs(model.cfg, "lowres_lfw"), model.cfg.eval.resolutions)
    assert [int(r["resolution_px"]) for r in rows] == [8, 32]
    assert [float(r["accuracy"]) for r in rows] == curve.accuracy


def test_cli_analyze_group_several_runs_and_gradients(tmp_path, checkpoint, model):
    ids = _db_with_runs(tmp_path, checkpoint, model, count=2, group="ablation/a")
    db = tmp_path / "runs.db"
    logs: list[str] = []
    written = cli_analyze.run_analyze(["ablation/a"], ["roc"], db=db, device="cpu", log=logs.append)
    group_dir = tmp_path / "figures" / "ablation_a"
    assert written == [{"figure": "roc", "png": str(group_dir / "roc.png"),
                        "data": [str(group_dir / "roc.csv"), str(group_dir / "roc.json")], "runs": ids}]
    assert len(json.loads((group_dir / "roc.json").read_text())) == 2
    store = Store(db)
    for run_id in ids:
        assert ("figure", str(group_dir / "roc.png")) in {(a["kind"], a["path"]) for a in store.artifacts(run_id)}
    # Several ids; one of them as the baseline of the similarity figure.
    written = cli_analyze.run_analyze([str(ids[0])], ["similarity"], baseline=ids[1], resolution=8, db=db,
                                      device="cpu", log=logs.append)
    summary = json.loads(Path(written[0]["data"][1]).read_text())
    assert [(s["model"].split()[0], s["baseline"]) for s in summary] == [(f"#{ids[0]}", False), (f"#{ids[1]}", True)]
    assert Path(written[0]["png"]).parent == tmp_path / "runs" / str(ids[0]) / "figures"
    written = cli_analyze.run_analyze([str(i) for i in ids], ["dimerror"], db=db, device="cpu", log=logs.append)
    assert Path(written[0]["png"]).parent == tmp_path / "figures" / f"runs-{ids[0]}-{ids[1]}"
    # The gradients figure needs no run.
    written = cli_analyze.run_analyze([], ["gradients"], db=db, device="cpu", log=logs.append)
    assert written[0]["png"] == str(tmp_path / "figures" / "gradients.png") and written[0]["runs"] == []


def test_cli_analyze_user_errors(tmp_path, checkpoint, model, capsys):
    (run_id,) = _db_with_runs(tmp_path, checkpoint, model)
    db = tmp_path / "runs.db"
    (tmp_path / "runs" / str(run_id) / "checkpoint.pt").unlink()
    with pytest.raises(LrfrError, match="no checkpoint"):
        cli_analyze.run_analyze([str(run_id)], ["roc"], db=db, device="cpu")
    with pytest.raises(LrfrError, match="unknown figure"):
        cli_analyze.run_analyze([str(run_id)], ["histogram"], db=db, device="cpu")
    with pytest.raises(LrfrError, match="neither a run id nor a group"):
        cli_analyze.run_analyze(["nosuchgroup"], ["roc"], db=db, device="cpu")
    with pytest.raises(LrfrError, match="need"):
        cli_analyze.run_analyze([], ["roc"], db=db, device="cpu")
    with pytest.raises(LrfrError, match="no run with id"):
        cli_analyze.run_analyze(["99"], ["roc"], db=db, device="cpu")
    from lrfr_tui.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(run_id), "--figure", "roc", "--db", str(db)])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and stderr.count("\n") == 1 and "no checkpoint" in stderr


def test_cli_figure_names_match_the_engine():
    assert cli_analyze.FIGURE_NAMES == tuple(FIGURES)
    assert cli_analyze.expand_figures(["all"]) == list(FIGURES)
    assert cli_analyze.expand_figures(["roc,resolution", "roc"]) == ["roc", "resolution"]
    assert cli_analyze.parse_resolutions("7, 14,HR") == [7, 14, 0]
