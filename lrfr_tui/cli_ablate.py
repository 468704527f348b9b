"""`lrfr ablate`: queue one of the paper's ablation grids (Tables 4-6) as a group of runs.

No `from __future__ import annotations`: Typer reads the annotations, local names of `register`.
"""

import json
import shlex
import sys
import time
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    from lrfr_tui.cli_common import DbOpt, JsonOpt, SetOpt, err

    @app.command()
    def ablate(table: Annotated[str, typer.Argument(help="table4 | table5 | table6")],
               base: Annotated[str, typer.Option(help="base preset: r34 (the paper) or tiny (CPU)")] = "r34",
               seeds: Annotated[int, typer.Option(help="runs per configuration (train.seed 0..N-1)")] = 1,
               overrides: SetOpt = None,
               group: Annotated[str | None, typer.Option(help="group name (default: TABLE-BASE-time)")] = None,
               db: DbOpt = None, as_json: JsonOpt = False) -> None:
        """Queue the runs of a paper ablation table; `lrfr results --group G` shows it in the paper's layout.

        Seed-major order (every configuration's seed 0 first), so a grid stopped early is still a
        whole table. Run again on an existing --group with more --seeds to add only the missing
        (configuration, seed) runs: a queued, running or finished one is never queued twice."""
        from engine.ablations import ablation_rows, base_overrides
        from engine.config import flatten, resolve, to_dict
        from engine.errors import LrfrError
        from lrfr_tui.runsdb import Store, db_path

        if seeds < 1:
            raise LrfrError("--seeds must be >= 1")
        rows = ablation_rows(table)
        group = group or f"{table}-{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        store = Store(db_path(db))
        have = _runs_in_group(store, group)
        configs = []
        for seed in range(seeds):
            for row in rows:
                if (row.label, seed) in have:
                    continue
                cfg = resolve(base, [*base_overrides(base), *row.overrides, *(overrides or []), f"train.seed={seed}"])
                cfg.name = row.label
                cfg.description = f"{table} row '{row.label}' on {base}, seed {seed}"
                configs.append(cfg)
        command = shlex.join(["lrfr", *sys.argv[1:]])
        ids = []
        for cfg in configs:
            run_id = store.create_run(to_dict(cfg), flatten(cfg), command, launcher=cfg.launch.launcher, group=group)
            store.set_tags(run_id, [f"ablation:{table}"])
            ids.append(run_id)
        if as_json:
            print(json.dumps({"group": group, "table": table, "runs": ids}))
        kept = f" ({len(have)} already in the group kept)" if have else ""
        err.print(f"queued {len(ids)} runs of {table} on {base} as group {group}{kept}; "
                  f"drain with `lrfr worker --until-empty`, then `lrfr results --group {group}`")


def _runs_in_group(store, group: str) -> set[tuple[str, int]]:
    """(configuration, train.seed) of the group's runs that are queued, running or finished."""
    from lrfr_tui.runsdb.groups import configurations_and_seeds
    from lrfr_tui.runsdb.states import ACTIVE_STATUSES, FINISHED

    return configurations_and_seeds(store, group, (*ACTIVE_STATUSES, FINISHED))
