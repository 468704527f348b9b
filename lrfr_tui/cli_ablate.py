"""`lrfr ablate`: queue one of the paper's ablation grids (Tables 4-6) as a group of runs.

No `from __future__ import annotations`: Typer reads the annotations, local names of `register`.
"""

import json
import shlex
import sys
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
        from lrfr_tui import usecases
        from lrfr_tui.runsdb import db_path

        path = db_path(db)
        plan = usecases.plan_ablation(path, table, base, seeds, overrides or [], group)
        ids = usecases.queue_ablation(path, plan, shlex.join(["lrfr", *sys.argv[1:]]))
        group = plan.group
        if as_json:
            print(json.dumps({"group": group, "table": table, "runs": ids}))
        kept = f" ({plan.kept} already in the group kept)" if plan.kept else ""
        err.print(f"queued {len(ids)} runs of {table} on {base} as group {group}{kept}; "
                  f"drain with `lrfr worker --until-empty`, then `lrfr results --group {group}`")

