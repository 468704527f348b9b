"""The run store: the one door to runs.db.

Everything that reads or writes runs.db goes through this package: the schema and its migrations
(``migrations``), the only writer (``store.Store``), the run state machine (``states``), the one
codec for stored values (``codec``), the filter language and its SQL (``filters``, ``filter_sql``),
the reads the commands and screens share (``reads``, ``series``, ``outcomes``, ``groups``), and the
stable views other programs read (``views``).
No module outside this package writes SQL (tests/test_layering.py checks it).
"""

from lrfr_tui.runsdb.base import DEFAULT_DB, PENDING_FILE, StoreError, db_errors, db_path, runs_root
from lrfr_tui.runsdb.connect import open_db
from lrfr_tui.runsdb.filter_sql import RunRow, select_runs
from lrfr_tui.runsdb.filters import (
    Filter,
    FilterError,
    Term,
    parse_filter,
    parse_filters,
    parse_sort,
    parse_term,
)
from lrfr_tui.runsdb.reads import check_runs, latest_results, latest_sources, run_ref, run_tags
from lrfr_tui.runsdb.run import Run
from lrfr_tui.runsdb.states import ACTIVE_STATUSES, FINAL_STATUSES, RESUMABLE_STATUSES, STATUSES
from lrfr_tui.runsdb.store import Store

__all__ = [
    "ACTIVE_STATUSES", "DEFAULT_DB", "FINAL_STATUSES", "PENDING_FILE", "RESUMABLE_STATUSES", "STATUSES",
    "Filter", "FilterError", "Run", "RunRow", "Store", "StoreError", "Term", "check_runs", "db_errors", "db_path",
    "latest_results", "latest_sources", "open_db", "parse_filter", "parse_filters", "parse_sort", "parse_term",
    "run_ref", "run_tags", "runs_root", "select_runs",
]
