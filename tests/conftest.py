"""Shared fixtures: every test gets its own catalog; generated data is cached once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import RunConfig, flatten, resolve, to_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lrfr-cache")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path, cache_dir):
    monkeypatch.setenv("LRFR_CACHE", str(cache_dir))
    monkeypatch.setenv("LRFR_CATALOG", str(tmp_path / "catalog.json"))
    monkeypatch.delenv("LRFR_DB", raising=False)


# A configuration small enough for a CPU test to train in seconds: 32 px faces, width-8 IResNet-18.
MICRO_OVERRIDES = [
    "model.name=iresnet18",
    "model.width=0.125",
    "model.input_size=32",
    "data.synthetic_identities=12",
    "data.synthetic_images_per_identity=4",
    "data.num_workers=0",
    "optim.batch_size=8",
    "optim.lr=0.05",
    "schedule.epochs=3",
    "schedule.milestones=[2]",
    "train.log_every=1",
    "eval.resolutions=[32,8]",
    "eval.standin_size=test",
    "eval.finetune_epochs=1",
    "eval.finetune_batch_size=8",
]


@pytest.fixture
def micro_config() -> RunConfig:
    return resolve("tiny", MICRO_OVERRIDES)


@pytest.fixture
def importable_worker(monkeypatch):
    """Runs trained by subprocesses (the scheduler's workers, torchrun) import this checkout, one thread each
    (tests start several at once on 2 cores). Modules that start them use it with ``usefixtures``."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def queue_micro_run(store, *overrides: str) -> int:
    """Queue a run of the micro configuration (plus ``overrides``) in ``store``, as ``lrfr run --queue`` does."""
    cfg = resolve("tiny", MICRO_OVERRIDES + list(overrides))
    return store.create_run(to_dict(cfg), flatten(cfg), "test", launcher="local")
