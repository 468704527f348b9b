"""Creating runs: the one place that turns configs into run rows, for every way a user starts them
(`lrfr run`, `eval`, `rerun`, `sweep`, `ablate` and the TUI's launch form).

Two kinds of creation, because they differ in who may claim the run:

- ``queue_runs``: ``queued`` rows, for a scheduler (`lrfr worker`, the TUI) to claim;
- ``record_here``: a run this process executes itself, created ``running`` with its pid in the
  same statement, so that no scheduler can claim (and train) it while this process imports torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import LrfrError
from lrfr_tui.runsdb import Store
from lrfr_tui.sweep_grid import GridAxis, grid_points


def _record(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from engine.config import flatten, to_dict

    return to_dict(config), flatten(config)


def queue_runs(db: Path, configs: Sequence[Any], command: str, *, group: str | None = None,
               parent_id: int | None = None, tags: Sequence[str] = (), head_of_queue: bool = False) -> list[int]:
    """Queue one run per config (RunConfig) as one group; ``head_of_queue`` puts them first, in order."""
    store = Store(db, create=True)
    try:
        ids = []
        for cfg in configs:
            config, params = _record(cfg)
            run_id = store.create_run(config, params, command, parent_id=parent_id,
                                      launcher=cfg.launch.launcher, group=group)
            if tags:
                store.set_tags(run_id, list(tags))
            ids.append(run_id)
        if head_of_queue:
            for position, run_id in enumerate(ids, start=1):
                store.move_in_queue(run_id, position)
    finally:
        store.close()
    return ids


def record_here(db: Path, config: Any, command: str, *, launcher: str = "foreground", group: str | None = None,
                parent_id: int | None = None, create: bool = True) -> int:
    """Record a run that this process executes itself: ``running`` with this pid from its first row."""
    store = Store(db, create=create)
    try:
        record, params = _record(config)
        return store.create_run(record, params, command, status="running", pid=os.getpid(), launcher=launcher,
                                group=group, parent_id=parent_id)
    finally:
        store.close()


def check_dataset(config: Any) -> None:
    """An unregistered training dataset is an error before anything is recorded."""
    if config.data.dataset != "synthetic":
        from engine.catalog import lookup

        lookup(config.data.dataset)


# ---------------------------------------------------------------- sweeps


def plan_sweep(preset: str | None, overrides: Sequence[str], axes: Sequence[GridAxis],
               config_file: Path | None = None, name: str | None = None) -> list[Any]:
    """One validated config per grid point, named by its point; every point is resolved before any is
    queued, so one bad value queues nothing."""
    from engine.config import resolve

    configs = []
    for point in grid_points(axes):
        cfg = resolve(preset, [*overrides, *point], config_file)
        if name:
            cfg.name = name
        if point:
            cfg.name = f"{cfg.name} " + " ".join(point)
        configs.append(cfg)
    return configs


def default_group(kind: str) -> str:
    """``sweep-20261203-120501``: a group name that sorts by time."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------- rerun, ablation


def plan_rerun(db: Path, run_id: int, overrides: Sequence[str]) -> tuple[Any, str | None]:
    """Another run's config with ``overrides`` applied and validated, and that run's group."""
    from engine.config import from_dict, parse_override, set_value, validate

    store = Store(db, create=False)
    try:
        parent = store.get_run(run_id)
    finally:
        store.close()
    cfg = from_dict(parent.config)
    for text in overrides:
        set_value(cfg, *parse_override(text))
    validate(cfg)
    return cfg, parent.group_name


@dataclass
class AblationPlan:
    table: str
    base: str
    group: str
    configs: list[Any]
    kept: int  # (configuration, seed) runs already in the group, not queued again


def plan_ablation(db: Path, table: str, base: str, seeds: int, overrides: Sequence[str],
                  group: str | None) -> AblationPlan:
    """The runs of a paper ablation table, seed-major (every configuration's seed 0 first, so a grid
    stopped early is still a whole table), minus those the group already has queued, running or
    finished."""
    from engine.ablations import ablation_rows, base_overrides
    from engine.config import resolve
    from lrfr_tui.runsdb.groups import configurations_and_seeds
    from lrfr_tui.runsdb.states import ACTIVE_STATUSES, FINISHED

    if seeds < 1:
        raise LrfrError("--seeds must be >= 1")
    rows = ablation_rows(table)
    group = group or f"{table}-{base}-{time.strftime('%Y%m%d-%H%M%S')}"
    store = Store(db, create=True)
    try:
        have = configurations_and_seeds(store, group, (*ACTIVE_STATUSES, FINISHED))
    finally:
        store.close()
    configs = []
    for seed in range(seeds):
        for row in rows:
            if (row.label, seed) in have:
                continue
            cfg = resolve(base, [*base_overrides(base), *row.overrides, *overrides, f"train.seed={seed}"])
            cfg.name = row.label
            cfg.description = f"{table} row '{row.label}' on {base}, seed {seed}"
            configs.append(cfg)
    return AblationPlan(table, base, group, configs, len(have))


def queue_ablation(db: Path, plan: AblationPlan, command: str) -> list[int]:
    """Queue a planned ablation, each run tagged ``ablation:TABLE``."""
    return queue_runs(db, plan.configs, command, group=plan.group, tags=[f"ablation:{plan.table}"])


# ---------------------------------------------------------------- the TUI's launch form


def launch(db: Path, form: Any, start_now: bool) -> list[int]:
    """Queue the run(s) of a launch form (a sweep when it has grid lines); ``start_now`` puts them
    at the head of the queue."""
    from lrfr_tui.launch_form import build_runs, cli_command

    built = build_runs(form)
    sweep = bool(form.grid_lines())
    group = form.group.strip() or (default_group("sweep") if sweep and len(built) > 1 else None)
    return queue_runs(db, [b.config for b in built], cli_command(form, sweep), group=group,
                      parent_id=form.parent_id, head_of_queue=start_now)
