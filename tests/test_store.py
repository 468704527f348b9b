import math
import sqlite3

import pytest

from engine.config import flatten, resolve, to_dict
from lrfr_tui.runsdb import Store, StoreError
from lrfr_tui.runsdb.migrations import SCHEMA_VERSION


def make_run(store: Store) -> int:
    cfg = resolve("tiny")
    return store.create_run(to_dict(cfg), flatten(cfg), "lrfr run --preset tiny")


def test_run_lifecycle_and_params(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = make_run(store)
    run = store.get_run(run_id)
    assert run.status == "queued" and run.config["preset"] == "tiny" and run.preset == "tiny"
    store.mark_started(run_id, tmp_path / "runs" / str(run_id), pid=123)
    store.mark_progress(run_id, 10, 100)
    store.mark_ended(run_id, "finished", 0)
    run = store.get_run(run_id)
    assert (run.status, run.step, run.total_steps, run.exit_code) == ("finished", 10, 100, 0)
    assert run.started <= run.ended


def test_nan_and_inf_metrics_are_stored_faithfully(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = make_run(store)
    store.add_metrics(run_id, [("loss", 1, 2.5, 0.0), ("loss", 2, float("nan"), 0.0), ("loss", 3, float("inf"), 0.0),
                               ("loss", 4, float("-inf"), 0.0)])
    series = store.metric_series(run_id, "loss")
    assert [s for s, _ in series] == [1, 2, 3, 4]
    values = [v for _, v in series]
    assert values[0] == 2.5 and math.isnan(values[1]) and values[2] == math.inf and values[3] == -math.inf


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "runs.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="written by a newer lrfr"):
        Store(path)


def test_unknown_run_and_garbage_file(tmp_path):
    store = Store(tmp_path / "runs.db")
    with pytest.raises(StoreError, match="no run with id 42"):
        store.get_run(42)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open runs database"):
        Store(junk)
