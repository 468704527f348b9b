"""`lrfr analyze`: the paper's figures for runs or a group, as PNGs with their data beside them.

Glue only: runs.db says which runs (ids, or a group's runs) and where their checkpoints are;
``engine.analysis`` computes and draws; the PNGs are recorded as artifacts of the runs they show.

No `from __future__ import annotations` here: Typer reads the option annotations, which are
local names of `register`, so they must be evaluated where they are written.
"""

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from engine.errors import LrfrError
from lrfr_tui.runsdb.groups import group_run_ids

ALL = "all"
# The names of engine.analysis.FIGURES, here so that `lrfr --help` does not import torch.
FIGURE_NAMES = ("resolution", "gradnorm", "embedding", "similarity", "roc", "dimerror", "gradients")
FIGURE_HELP = ("resolution: accuracy per probe resolution + SSIM (Fig. 3a); gradnorm: sum of backbone gradient "
               "norms per resolution (3b); embedding: PCA/t-SNE of the same faces at HR..7 px (3c/7); similarity: "
               "positive/negative cosine histograms at HR and LR (1); roc: ROC curves, log FAR (5); dimerror: "
               "per-dimension |f_hr - f_lr| (6); gradients: dL/dx of L1/L2/LogExp by autograd (4), no run needed")


@dataclass
class Targets:
    """The runs a command names: explicit ids and the runs of named groups, in order, without repeats."""

    run_ids: list[int] = field(default_factory=list)
    explicit_ids: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


def resolve_targets(store, tokens: list[str]) -> Targets:
    """An integer is a run id, anything else a group name (its runs that are not deleted)."""
    out = Targets()
    for token in tokens:
        text = token.strip()
        if text.isdigit():
            run_id = int(text)
            run = store.get_run(run_id)  # unknown id: StoreError, one line
            if run.deleted:
                raise LrfrError(f"run {run_id} is deleted")
            out.explicit_ids.append(run_id)
            ids = [run_id]
        else:
            ids = group_run_ids(store, text)
            if not ids:
                raise LrfrError(f"{text!r} is neither a run id nor a group with runs in {store.path}")
            out.groups.append(text)
        out.run_ids.extend(i for i in ids if i not in out.run_ids)
    return out


def _safe(name: str) -> str:
    """A group name as one path component."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "group"


def output_dir(db: Path, targets: Targets) -> Path:
    """runs/<id>/figures for one run; figures/<group> for a group; figures/runs-<ids> for several runs;
    figures/ when no run is involved (the gradients figure)."""
    from lrfr_tui.runsdb import runs_root

    figures = db.resolve().parent / "figures"
    if not targets.groups and len(targets.explicit_ids) == 1:
        return runs_root(db) / str(targets.explicit_ids[0]) / "figures"
    parts = [_safe(g) for g in targets.groups]
    if targets.explicit_ids:
        parts.append("runs-" + "-".join(map(str, targets.explicit_ids)))
    return figures / "+".join(parts) if parts else figures


def parse_resolutions(text: str | None) -> list[int] | None:
    """``"7,14,20,HR"`` -> [7, 14, 20, 0] (0 = the model's input size)."""
    if text is None:
        return None
    from engine.analysis import HR

    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.lower() == "hr":
            out.append(HR)
        elif item.isdigit() and int(item) >= 1:
            out.append(int(item))
        else:
            raise LrfrError(f"--resolutions: {item!r} is not a resolution in px (or HR)")
    if not out:
        raise LrfrError("--resolutions is empty")
    return out


def expand_figures(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for item in (s.strip().lower() for s in name.split(",")):
            if not item:
                continue
            if item == ALL:
                out.extend(f for f in FIGURE_NAMES if f not in out)
            elif item not in FIGURE_NAMES:
                raise LrfrError(f"unknown figure {item!r}; choose from: {', '.join(FIGURE_NAMES)} (or all)")
            elif item not in out:
                out.append(item)
    if not out:
        raise LrfrError(f"give --figure NAME: {', '.join(FIGURE_NAMES)} (or all)")
    return out


def register(app: typer.Typer) -> None:
    from lrfr_tui.cli_common import DbOpt, JsonOpt, err

    @app.command()
    def analyze(
        targets: Annotated[list[str] | None, typer.Argument(
            help="run ids and/or group names (none for the gradients figure)", show_default=False)] = None,
        figure: Annotated[list[str] | None, typer.Option(
            "--figure", "-f", help=f"figure to draw (repeatable, comma-separated, or 'all'). {FIGURE_HELP}",
            show_default=False)] = None,
        baseline: Annotated[int | None, typer.Option(
            help="run id of a baseline to draw beside the runs (similarity marks it as the baseline)")] = None,
        resolution: Annotated[int | None, typer.Option(
            "--resolution", "-r", help="LR probe in px: similarity/dimerror (default 14), roc (default none)")] = None,
        resolutions: Annotated[str | None, typer.Option(
            help="comma-separated px (HR = full size) for resolution/gradnorm (default: the run's "
                 "eval.resolutions) and embedding (default HR,42,28,20,14,7)")] = None,
        benchmark: Annotated[str, typer.Option(help="verification pairs to use: lfw | xqlfw")] = "lfw",
        method: Annotated[str, typer.Option(help="embedding projection: pca | tsne")] = "pca",
        faces: Annotated[int, typer.Option(help="embedding: number of faces")] = 200,
        images: Annotated[int, typer.Option(help="gradnorm: number of labelled training faces")] = 64,
        gradnorm_batch: Annotated[int | None, typer.Option(
            help="gradnorm: batch size (default: all images in one batch)")] = None,
        batch_stats: Annotated[bool, typer.Option(
            "--batch-stats", help="gradnorm: BatchNorm in training mode (on a copy) instead of eval mode")] = False,
        out_dir: Annotated[Path | None, typer.Option(
            "--out", help="write here instead of runs/<id>/figures or figures/<group>")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
        db: DbOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Draw the paper's analyses for a run, several runs or a group: PNG + CSV/JSON per figure.

        RUN|GROUP: an integer is a run id, anything else a group name (several may be given).

        Files go to runs/<id>/figures (one run), figures/<group> (a group) or figures/runs-<ids> (several runs) beside runs.db; they are recorded as artifacts of the runs they show, and their paths are printed.
        """
        written = run_analyze(targets or [], figure or [], baseline=baseline, resolution=resolution,
                              resolutions=resolutions, benchmark=benchmark, method=method, faces=faces,
                              images=images, gradnorm_batch=gradnorm_batch, batch_stats=batch_stats,
                              out_dir=out_dir, device=device, db=db, log=err.print)
        if as_json:
            print(json.dumps(written, indent=2))
            return
        for item in written:
            for path in [item["png"], *item["data"]]:
                print(path)


def run_analyze(tokens: list[str], figure_names: list[str], *, baseline: int | None = None,
                resolution: int | None = None, resolutions: str | None = None, benchmark: str = "lfw",
                method: str = "pca", faces: int = 200, images: int = 64, gradnorm_batch: int | None = None,
                batch_stats: bool = False, out_dir: Path | None = None, device: str = "auto",
                db: Path | None = None, log=print) -> list[dict]:
    """Everything `lrfr analyze` does; returns one dict per figure (figure, png, data, runs)."""
    from engine.analysis import MODEL_FREE_FIGURES, PROJECTIONS, AnalysisOptions, make_figure
    from engine.train import DistEnv, select_device
    from lrfr_tui.runsdb import Store, db_path

    names = expand_figures(figure_names)
    _check_options(benchmark, method, resolution, gradnorm_batch, faces, images, PROJECTIONS)
    sweep = parse_resolutions(resolutions)
    needs_models = any(n not in MODEL_FREE_FIGURES for n in names)
    if needs_models and not tokens and baseline is None:
        raise LrfrError(f"{', '.join(n for n in names if n not in MODEL_FREE_FIGURES)} need(s) a run id or a "
                        f"group: lrfr analyze RUN|GROUP --figure NAME")

    path = db_path(db)
    store = Store(path, create=False) if tokens or baseline is not None else None
    targets = resolve_targets(store, tokens) if store is not None else Targets()
    if baseline is not None:
        resolve_targets(store, [str(baseline)])  # exists and is not deleted
    involved = targets.run_ids + ([baseline] if baseline is not None and baseline not in targets.run_ids else [])
    shown = targets if tokens or baseline is None else Targets([baseline], [baseline])  # --baseline alone
    destination = Path(out_dir) if out_dir is not None else output_dir(path, shown)
    torch_device = select_device(device, DistEnv())
    options = AnalysisOptions(resolutions=sweep, resolution=resolution, benchmark=benchmark, method=method,
                              faces=faces, gradnorm_images=images, gradnorm_batch=gradnorm_batch,
                              gradnorm_train_mode=batch_stats, device=str(torch_device))

    models = _load_models(store, path, involved, baseline, torch_device, log) if needs_models else []
    if not needs_models and involved:
        options.dimension = int(store.get_run(involved[0]).config.get("model", {}).get("embedding_size", 512))

    written = []
    for name in names:
        started = time.perf_counter()
        files = make_figure(name, models, destination, options)
        what = f" for {len(models)} model(s)" if models else ""
        log(f"analyze: {name}{what} in {time.perf_counter() - started:.1f} s -> {destination}")
        if store is not None:
            for run_id in involved:
                store.add_artifact(run_id, "figure", files.png)
                for data in files.data:
                    store.add_artifact(run_id, "figure_data", data)
        written.append({"figure": name, "png": str(files.png), "data": [str(p) for p in files.data],
                        "runs": involved})
    return written


def _check_options(benchmark: str, method: str, resolution: int | None, gradnorm_batch: int | None, faces: int,
                   images: int, projections) -> None:
    """One clear line for each option out of range, before anything is loaded."""
    if benchmark not in ("lfw", "xqlfw"):
        raise LrfrError(f"--benchmark must be lfw or xqlfw, got {benchmark!r}")
    if method not in projections:
        raise LrfrError(f"--method must be one of {', '.join(projections)}, got {method!r}")
    for label, value in (("--resolution", resolution), ("--gradnorm-batch", gradnorm_batch)):
        if value is not None and value < 1:
            raise LrfrError(f"{label} must be >= 1, got {value}")
    if faces < 2 or images < 1:
        raise LrfrError("--faces must be >= 2 and --images >= 1")


def _load_models(store, path: Path, run_ids: list[int], baseline: int | None, torch_device, log) -> list:
    """Each run's latest checkpoint as an analysis model (a running run's too, said so)."""
    from engine.analysis import load_model
    from lrfr_tui.runsdb import runs_root

    models = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        checkpoint = runs_root(path) / str(run_id) / "checkpoint.pt"
        if not checkpoint.exists():
            raise LrfrError(f"run {run_id} has no checkpoint at {checkpoint} (status {run.status})")
        if run.status == "running":
            log(f"run {run_id} is still running: analysing its latest checkpoint")
        model = load_model(checkpoint, f"#{run_id} {run.name}", torch_device)
        model.baseline = run_id == baseline
        models.append(model)
    return models
