"""The use-case layer: everything a user can do to runs, called by both the CLI and the TUI.

- ``submit``: create runs (queued, or running in this process) for run, eval, rerun, sweep, ablate
  and the TUI's launch form; sweep-grid parsing and expansion.
- ``actions``: kill, resume, tag, note, delete.
- ``export``: the results matrix to a CSV / Markdown / LaTeX file.
- ``background``: work on a finished run that needs torch (evaluate on more benchmarks, draw its figures) in a
  process of its own, so the TUI never imports torch.

The CLI commands and the screens only parse what the user typed and render what comes back; no
other module creates a run (tests/test_layering.py checks it).
"""

from lrfr_tui.sweep_grid import GridAxis, grid_points, parse_axis
from lrfr_tui.usecases.actions import (
    add_note,
    delete_runs,
    kill_run,
    kill_runs,
    move_queued,
    parse_tag_edit,
    resume_here,
    resume_queued,
    resume_runs,
    run_directory,
    set_tags,
    tag_runs,
)
from lrfr_tui.usecases.background import DEFAULT_FIGURES, BackgroundJob, draw_figures, evaluate_more
from lrfr_tui.usecases.export import default_baseline, export_results, render_export
from lrfr_tui.usecases.submit import (
    AblationPlan,
    check_dataset,
    default_group,
    launch,
    plan_ablation,
    plan_rerun,
    plan_sweep,
    queue_ablation,
    queue_runs,
    record_here,
)

__all__ = [
    "DEFAULT_FIGURES", "BackgroundJob", "draw_figures", "evaluate_more", "move_queued", "run_directory",
    "AblationPlan", "GridAxis", "add_note", "check_dataset", "default_baseline", "default_group", "delete_runs", "export_results",
    "grid_points", "kill_run", "kill_runs", "launch", "parse_axis", "parse_tag_edit", "plan_ablation", "plan_rerun",
    "plan_sweep", "queue_ablation", "queue_runs", "record_here", "render_export", "resume_here", "resume_queued", "resume_runs",
    "set_tags", "tag_runs",
]
