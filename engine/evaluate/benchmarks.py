"""The LRFR benchmarks: each loads its data (a registered dataset or a synthetic stand-in in the
same file format), runs its published protocol and reports one result per
(benchmark, protocol, metric, resolution).

| benchmark  | protocol(s)                                   | metrics                                 |
| ---------- | --------------------------------------------- | --------------------------------------- |
| lfw        | insightface 10-fold (+ VAL@FAR, ROC TAR@FAR)  | acc, acc_std, acc_stderr, threshold ... |
| xqlfw      | XQLFW official (cosine), insightface 10-fold  | acc, threshold                          |
| scface     | zero_shot+finetune (80 ids), zero_shot_all130 | rank1/rank5 per distance d1..d3, mean   |
| tinyface   | no_finetune, finetune (on Training_Set)       | rank1/5/10/20, mAP                      |
| lowres_lfw | LFW degraded per resolution (Figure 3a)       | acc per resolution, ssim                |

Each ``bench_NAME`` is registered with ``@benchmark_runner(NAME)`` against its declaration in
``engine.evaluate.registry`` (label, protocols in preference order, headline metrics, formats), which is what
``engine.config`` and the application read without importing this module.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.catalog import find_pairs_file
from engine.config import RunConfig
from engine.data.binpack import load_bin
from engine.data.pairs import VerificationPairs, load_pairs_tree
from engine.data.scface import (
    FINETUNE,
    ZERO_SHOT,
    ZERO_SHOT_ALL,
    SCface,
    dcr_train_count,
    load_scface,
    saved_split,
    split_ids,
)
from engine.data.standins import materialise_standins
from engine.data.tinyface import DISTRACTOR_LABEL, tinyface_splits, training_root
from engine.errors import DatasetError
from engine.evaluate.availability import catalog_entry
from engine.evaluate.embeddings import EmbedFn, embed, embed_dataset
from engine.evaluate.identification import evaluate_identification
from engine.evaluate.registry import (
    PROTOCOLS_VERSION,
    BenchmarkInfo,
    benchmark_info,
    benchmark_names,
    benchmarks,
)
from engine.evaluate.roc import FAR_TARGETS, roc_curve, tar_at_far
from engine.evaluate.ssim import ssim_degraded
from engine.evaluate.verification import insightface_verification, squared_l2, xqlfw_verification
from engine.registry import Bindings
from engine.reporting import Reporter


@dataclass
class EvalContext:
    """What every benchmark gets: the model, the run's config, where to put files, whom to tell."""

    model: nn.Module | EmbedFn
    cfg: RunConfig
    device: torch.device
    reporter: Reporter
    run_dir: Path | None = None
    # The catalog entry the benchmark reads (``xqlfw=my_pairs`` in eval.benchmarks); None: its own.
    dataset: str | None = None
    # Result names whose data source was reported (a ``data_source`` event, once per benchmark);
    # shared by the contexts ``dataclasses.replace`` makes from one evaluation's base context.
    sources_reported: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return self.cfg.model.input_size

    @property
    def can_finetune(self) -> bool:
        """Only the engine's own backbones can be fine-tuned (not TorchScript/ONNX models)."""
        return isinstance(self.model, nn.Module) and hasattr(self.model, "forward_features")

    def embed(self, images: torch.Tensor, resolution=None) -> np.ndarray:
        return embed(self.model, images, self.device, self.cfg.eval.batch_size, resolution=resolution)

    def report(self, benchmark: str, protocol: str, metrics: dict[str, float], resolution: int | None = None) -> None:
        for metric, value in metrics.items():
            self.reporter.result(benchmark, protocol, metric, resolution, float(value))

    def report_outcomes(self, benchmark: str, protocol: str, metric: str, correct: np.ndarray,
                        resolution: int | None = None) -> None:
        self.reporter.outcomes(benchmark, protocol, metric, resolution, np.asarray(correct, dtype=bool))

    def save_json(self, name: str, data: dict) -> None:
        """Protocol details a result depends on (splits, drawn sizes), kept beside the run."""
        if self.run_dir is None:
            return
        path = Path(self.run_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
        self.reporter.artifact("protocol", path)


# ---------------------------------------------------------------- where the data comes from


_CHUNK = 1 << 20
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 hex[:16] of a file, read in 1 MiB chunks (a 100 MB pack: ~0.2 s), cached per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def _tree_digest(root: Path) -> str:
    """A stable digest of a tree's sorted relative file list (names only: cheap on a large image tree)."""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _checksum(fmt: str, path: Path, pairs: Path | None) -> str | None:
    """The checksum of what the protocol's pairs/list come from: the .bin pack, the pairs file, or the
    file list of an scface/tinyface tree. None when the data is not there (its reader says why)."""
    try:
        if fmt == "bin":
            return _file_digest(path)
        if fmt == "pairs":
            pairs = pairs or find_pairs_file(path)
            return _file_digest(pairs) if pairs is not None else None
        return _tree_digest(path) if path.is_dir() else None
    except OSError:
        return None


def _report_source(ctx: EvalContext, name: str, kind: str, dataset: str, fmt: str, path: Path,
                   pairs: Path | None) -> None:
    """One ``data_source`` event per benchmark result name and evaluation: which data its results measure."""
    result_name = name if ctx.dataset is None else f"{name}:{ctx.dataset}"
    if result_name in ctx.sources_reported:
        return
    ctx.sources_reported.add(result_name)
    source = {"kind": kind, "dataset": dataset, "format": fmt, "path": str(path),
              "checksum": _checksum(fmt, path, pairs), "protocol_version": PROTOCOLS_VERSION}
    what = "synthetic stand-in" if kind == "standin" else "catalog dataset"
    ctx.reporter.event("data_source", f"{result_name}: {what} {dataset} ({fmt}, {path})",
                       benchmark=result_name, source=source)


def _source(ctx: EvalContext, name: str) -> tuple[str, Path, Path | None]:
    """(format, path, pairs file) of benchmark ``name``'s data: its stand-in, its catalog entry, or the
    entry ``ctx.dataset`` (which must hold a format the benchmark reads). Reports which it is (once)."""
    if ctx.cfg.eval.source == "synthetic":
        if ctx.dataset is not None:
            raise DatasetError(f"{name}={ctx.dataset}: eval.source=synthetic uses stand-ins, not catalog "
                               f"datasets; set eval.source=catalog")
        from engine.sources import cache_root

        paths = materialise_standins(cache_root(), seed=ctx.cfg.eval.seed, size_preset=ctx.cfg.eval.standin_size)
        # The LFW benchmark reads the .bin pack, lowres_lfw the tree + pairs.txt: both readers get used.
        found = {
            "lfw": ("bin", paths["lfw_bin"], None),
            "lowres_lfw": ("pairs", paths["lfw"], None),
            "xqlfw": ("pairs", paths["xqlfw"], None),
            "scface": ("scface", paths["scface"], None),
            "tinyface": ("tinyface", paths["tinyface"], None),
        }[name]
        _report_source(ctx, name, "standin", f"standin-{ctx.cfg.eval.standin_size}", *found)
        return found
    entry = catalog_entry(name, ctx.dataset)
    found = (entry.format, Path(entry.path), Path(entry.pairs) if entry.pairs else None)
    _report_source(ctx, name, "catalog", entry.name, *found)
    return found


def _load_pairs(ctx: EvalContext, name: str) -> VerificationPairs:
    fmt, path, pairs = _source(ctx, name)
    if fmt == "bin":
        return load_bin(path, size=ctx.size)
    if fmt == "pairs":
        pairs = pairs or find_pairs_file(path)
        if pairs is None:
            raise DatasetError(f"no pairs file found in {path} for {name}")
        return load_pairs_tree(path, pairs, size=ctx.size)
    raise DatasetError(f"{name}: a {fmt!r} dataset cannot be used for verification; register a .bin pack "
                       f"or an image tree with a pairs file")


# ---------------------------------------------------------------- the runnable benchmarks

BenchmarkFn = Callable[[EvalContext], None]
_RUNNERS: Bindings[BenchmarkFn] = Bindings("benchmark", benchmark_names, "engine.evaluate.registry",
                                           "benchmark_runner", verb="runs")


def benchmark_runner(name: str) -> Callable[[BenchmarkFn], BenchmarkFn]:
    """Registers the decorated function as what runs benchmark ``name``, which must be declared in
    ``engine.evaluate.registry`` (KeyError otherwise). The declaration (protocols, headline metrics, formats)
    lives there so that it loads without torch; this ties each run function to it by name, once."""
    info = benchmark_info(name)
    if info.name != name:  # benchmark_info also accepts result names (xqlfw:my_pairs): not here
        raise KeyError(f"{name!r} is not a benchmark name; register {info.name!r}")
    return _RUNNERS.register(name)


def _runnable(declared: tuple[BenchmarkInfo, ...]) -> dict[str, BenchmarkFn]:
    """name -> run function for every declared benchmark, in paper order; a declared benchmark that nothing
    runs is an error when this module is imported, not when an evaluation reaches it."""
    return _RUNNERS.complete(info.name for info in declared)


# ---------------------------------------------------------------- verification


def _verification_metrics(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray,
                          folds: int = 10, seed: int = 0) -> tuple[dict[str, float], np.ndarray]:
    """The insightface 10-fold metrics, with ``acc_ci95_lo`` / ``acc_ci95_hi``: the 95% percentile bootstrap
    interval (1,000 resamples of the pairs, seeded) of the per-pair correctness behind ``acc``, and that
    per-pair correctness."""
    from engine.evaluate.uncertainty import bootstrap_ci

    res = insightface_verification(emb1, emb2, issame, folds=folds)
    metrics = {"acc": res.accuracy, "acc_std": res.std, "acc_stderr": res.stderr, "threshold": res.threshold}
    metrics["acc_ci95_lo"], metrics["acc_ci95_hi"] = bootstrap_ci(res.correct, n_boot=1000, seed=seed, level=0.95)
    if res.val_far is not None:
        metrics["val@far=1e-3"] = res.val_far.val
    return metrics, res.correct


def _report_verification(ctx: EvalContext, benchmark: str, protocol: str, emb1: np.ndarray, emb2: np.ndarray,
                         pairs: VerificationPairs, resolution: int | None = None,
                         extra: dict[str, float] | None = None) -> None:
    metrics, correct = _verification_metrics(emb1, emb2, pairs.issame, pairs.folds, seed=ctx.cfg.eval.seed)
    ctx.report(benchmark, protocol, {**metrics, **(extra or {})}, resolution=resolution)
    ctx.report_outcomes(benchmark, protocol, "acc", correct, resolution=resolution)


def _tar_metrics(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray) -> dict[str, float]:
    """TAR at each FAR target the pair count can resolve, in both conventions (labelled)."""
    if issame.all() or not issame.any():
        return {}
    similarity = 1.0 - squared_l2(emb1, emb2) / 2  # cosine of unit vectors
    curve = roc_curve(issame, similarity)
    negatives = int((~issame).sum())
    targets = tuple(t for t in FAR_TARGETS if t * negatives >= 1)
    out = {}
    for target, tar in tar_at_far(curve.fpr, curve.tpr, targets).items():
        out[f"tar@far={target:.0e}_nearest"] = tar.nearest_tar
        out[f"tar@far={target:.0e}_conservative"] = tar.conservative_tar
    return out


@benchmark_runner("lfw")
def bench_lfw(ctx: EvalContext) -> None:
    pairs = _load_pairs(ctx, "lfw")
    emb = ctx.embed(pairs.images)
    e1, e2 = emb[0::2], emb[1::2]
    _report_verification(ctx, "lfw", "insightface_10fold", e1, e2, pairs)
    ctx.report("lfw", "roc", _tar_metrics(e1, e2, pairs.issame))


@benchmark_runner("xqlfw")
def bench_xqlfw(ctx: EvalContext) -> None:
    pairs = _load_pairs(ctx, "xqlfw")
    emb = ctx.embed(pairs.images)
    e1, e2 = emb[0::2], emb[1::2]
    official = xqlfw_verification(e1, e2, pairs.issame, pairs.folds)
    from engine.evaluate.uncertainty import bootstrap_ci

    lo, hi = bootstrap_ci(official.correct, seed=ctx.cfg.eval.seed)
    ctx.report("xqlfw", "xqlfw_official", {"acc": official.accuracy, "acc_std": official.std,
                                           "acc_ci95_lo": lo, "acc_ci95_hi": hi, "threshold": official.threshold})
    ctx.report_outcomes("xqlfw", "xqlfw_official", "acc", official.correct)
    _report_verification(ctx, "xqlfw", "insightface_10fold", e1, e2, pairs)


@benchmark_runner("lowres_lfw")
def bench_lowres_lfw(ctx: EvalContext) -> None:
    """Figure 3a: LFW with the probe side synthesised at each resolution."""
    pairs = _load_pairs(ctx, "lowres_lfw")
    mode = ctx.cfg.eval.lowres_mode
    first, second = pairs.first, pairs.second
    hr1, hr2 = ctx.embed(first), ctx.embed(second)
    protocol = f"insightface_10fold_{mode}"
    if mode == "random":
        # One draw of a size per image from the configured resolutions, seeded and saved.
        rng = np.random.default_rng(ctx.cfg.eval.seed)
        sizes = rng.choice(np.array(ctx.cfg.eval.resolutions), size=(2, pairs.num_pairs))
        r1, r2 = torch.from_numpy(sizes[0]), torch.from_numpy(sizes[1])
        e1, e2 = ctx.embed(first, resolution=r1), ctx.embed(second, resolution=r2)
        ctx.save_json("lowres_lfw_random_sizes.json", {"seed": ctx.cfg.eval.seed, "first": sizes[0].tolist(),
                                                       "second": sizes[1].tolist()})
        _report_verification(ctx, "lowres_lfw", protocol, e1, e2, pairs)
        return
    for r in ctx.cfg.eval.resolutions:
        if r >= ctx.size:
            e1, e2, quality = hr1, hr2, 1.0
        else:
            e2 = ctx.embed(second, resolution=r)
            e1 = ctx.embed(first, resolution=r) if mode == "both" else hr1
            quality = float(ssim_degraded(second, r).mean())  # chunked: bounded memory
        _report_verification(ctx, "lowres_lfw", protocol, e1, e2, pairs, resolution=min(r, ctx.size),
                             extra={"ssim": quality})


# ---------------------------------------------------------------- fine-tuning on a benchmark's training split


class TensorFaces(Dataset):
    """(uint8 image, label) items from one tensor; labels are remapped to 0..K-1 for a fresh head."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        classes, self.targets = np.unique(np.asarray(labels), return_inverse=True)
        self.images = images
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.targets[index])


class _EventsOnly(Reporter):
    """Fine-tuning tells the run what it does, but keeps its loss curve out of the run's series."""

    def __init__(self, parent: Reporter, label: str) -> None:
        self.parent, self.label = parent, label

    def event(self, kind: str, message: str, **fields) -> None:
        if kind != "checkpoint":
            self.parent.event(kind, f"{self.label}: {message}", **fields)


def finetune(ctx: EvalContext, dataset: Dataset, label: str) -> nn.Module:
    """A real training run of the engine's trainer on ``dataset``, starting from the evaluated weights."""
    from engine.train import train

    e = ctx.cfg.eval
    cfg = copy.deepcopy(ctx.cfg)
    cfg.optim.lr = e.finetune_lr
    cfg.optim.batch_size = max(2, min(e.finetune_batch_size, len(dataset)))
    cfg.schedule.epochs = e.finetune_epochs
    cfg.schedule.milestones = []
    cfg.schedule.warmup_epochs = 0.0
    cfg.schedule.max_steps = 0
    cfg.data.num_workers = 0
    cfg.train.log_every = 10**9
    run_dir = Path(ctx.run_dir) / f"finetune-{label}" if ctx.run_dir else None
    if run_dir is None:
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix=f"lrfr-finetune-{label}-"))
    ctx.reporter.event("finetune", f"fine-tuning on {label}: {len(dataset)} images, "
                                   f"{dataset.num_classes} identities, {e.finetune_epochs} epochs")
    result = train(cfg, run_dir, _EventsOnly(ctx.reporter, label), resume=False, dataset=dataset,
                   init_backbone=ctx.model.state_dict(), single_process=True)
    return result.backbone.to(ctx.device).eval()


# ---------------------------------------------------------------- identification


def _scface_protocol(ctx: EvalContext, data: SCface, protocol: str, model=None) -> None:
    from engine.evaluate.uncertainty import bootstrap_ci, stratified_bootstrap_ci

    model = model if model is not None else ctx.model
    gallery = embed(model, data.gallery_images, ctx.device, ctx.cfg.eval.batch_size)
    rank1, rank5, hits1 = [], [], []
    seed = ctx.cfg.eval.seed
    for distance in sorted(data.probes):
        probes = data.probes[distance]
        emb = embed(model, probes.images, ctx.device, ctx.cfg.eval.batch_size)
        res = evaluate_identification(emb, probes.ids, gallery, data.gallery_ids, ranks=(1, 5))
        rank1.append(res.cmc[1])
        rank5.append(res.cmc[5])
        hits1.append(res.hits(1))
        lo, hi = bootstrap_ci(hits1[-1], n_boot=1000, seed=seed)
        ctx.report("scface", protocol, {f"rank1_d{distance}": res.cmc[1], f"rank1_d{distance}_ci95_lo": lo,
                                        f"rank1_d{distance}_ci95_hi": hi, f"rank5_d{distance}": res.cmc[5]})
        ctx.report_outcomes("scface", protocol, f"rank1_d{distance}", hits1[-1])
    lo, hi = stratified_bootstrap_ci(hits1, n_boot=1000, seed=seed)  # each distance resampled within itself
    ctx.report("scface", protocol, {"rank1_mean": float(np.mean(rank1)), "rank1_mean_ci95_lo": lo,
                                    "rank1_mean_ci95_hi": hi, "rank5_mean": float(np.mean(rank5))})
    # The mean over distances of equally many probes is the accuracy of all probes together: the
    # distances' correctness one after another is the item vector behind rank1_mean.
    ctx.report_outcomes("scface", protocol, "rank1_mean", np.concatenate(hits1))


SCFACE_SPLIT_FILE = "scface_split.json"


def scface_split(ctx: EvalContext, data: SCface) -> tuple[np.ndarray, np.ndarray]:
    """The run's DCR split (fine-tuning ids, test ids): the one in its ``scface_split.json`` when that still fits
    this set, seed and size, else a fresh seeded draw, saved there. ``zero_shot`` and ``finetune`` both test on
    its test ids, so every protocol of a run - and a later re-evaluation of it - sees the same 80 subjects."""
    subjects = data.subjects
    n_train = dcr_train_count(len(subjects), ctx.cfg.eval.scface_train_ids)
    seed = ctx.cfg.eval.seed
    path = Path(ctx.run_dir) / SCFACE_SPLIT_FILE if ctx.run_dir is not None else None
    if path is not None and path.is_file():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None
        split = saved_split(record, subjects, n_train, seed)
        if split is not None:
            return split
        ctx.reporter.event("scface", f"{path} does not fit this SCface set (seed {seed}, {len(subjects)} "
                                     f"subjects, {n_train} fine-tuning ids); drawing the split again")
    train_ids, test_ids = split_ids(subjects, n_train=n_train, seed=seed)
    ctx.save_json(SCFACE_SPLIT_FILE, {"seed": seed, "n_train": n_train, "train_ids": train_ids.tolist(),
                                      "test_ids": test_ids.tolist(),
                                      "protocols_on_test_ids": [ZERO_SHOT, FINETUNE]})
    return train_ids, test_ids


@benchmark_runner("scface")
def bench_scface(ctx: EvalContext) -> None:
    _, root, _ = _source(ctx, "scface")
    expected = None if ctx.cfg.eval.source == "synthetic" else 130
    data = load_scface(root, size=ctx.size, expected_subjects=expected)
    protocols = ctx.cfg.eval.scface_protocols
    if ZERO_SHOT_ALL in protocols:
        _scface_protocol(ctx, data, ZERO_SHOT_ALL)
    if ZERO_SHOT not in protocols and FINETUNE not in protocols:
        return
    train_ids, test_ids = scface_split(ctx, data)
    if ZERO_SHOT in protocols:
        _scface_protocol(ctx, data.select(test_ids), ZERO_SHOT)
    if FINETUNE in protocols:
        if not ctx.can_finetune:
            ctx.reporter.event("skip", "scface finetune protocol needs an lrfr checkpoint, not an exported model")
            return
        train_part = data.select(train_ids)
        images = torch.cat([train_part.gallery_images, *(p.images for p in train_part.probes.values())])
        labels = np.concatenate([train_part.gallery_ids, *(p.ids for p in train_part.probes.values())])
        tuned = finetune(ctx, TensorFaces(images, labels), "scface")
        _scface_protocol(ctx, data.select(test_ids), FINETUNE, model=tuned)


def _tinyface_protocol(ctx: EvalContext, root: Path, protocol: str, model) -> None:
    splits = tinyface_splits(root, size=ctx.size)
    emb = {k: embed_dataset(model, s, ctx.device, ctx.cfg.eval.batch_size) for k, s in splits.items()}
    gallery = np.concatenate([emb["match"], emb["distractor"]])
    gallery_labels = np.concatenate([splits["match"].labels, splits["distractor"].labels])
    res = evaluate_identification(emb["probe"], splits["probe"].labels, gallery, gallery_labels,
                                  ranks=(1, 5, 10, 20), distractor_label=DISTRACTOR_LABEL)
    from engine.evaluate.uncertainty import bootstrap_ci

    metrics = {f"rank{k}": v for k, v in res.cmc.items()}
    metrics["rank1_ci95_lo"], metrics["rank1_ci95_hi"] = bootstrap_ci(res.hits(1), n_boot=1000,
                                                                      seed=ctx.cfg.eval.seed)
    metrics["mAP"] = res.mean_ap
    ctx.report("tinyface", protocol, metrics)
    ctx.report_outcomes("tinyface", protocol, "rank1", res.hits(1))


@benchmark_runner("tinyface")
def bench_tinyface(ctx: EvalContext) -> None:
    _, root, _ = _source(ctx, "tinyface")
    _tinyface_protocol(ctx, root, "no_finetune", ctx.model)
    if ctx.cfg.eval.tinyface_finetune:
        if not ctx.can_finetune:
            ctx.reporter.event("skip", "tinyface finetune needs an lrfr checkpoint, not an exported model")
            return
        from engine.data import ImageFolderDataset

        tuned = finetune(ctx, ImageFolderDataset(training_root(root), size=ctx.size), "tinyface")
        _tinyface_protocol(ctx, root, "finetune", tuned)


# What run_benchmarks runs, by name (tests add fakes to it): every benchmark the registry declares.
BENCHMARKS: dict[str, BenchmarkFn] = _runnable(benchmarks())
