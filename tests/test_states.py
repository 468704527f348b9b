"""The run state machine (lrfr_tui/runsdb/states.py) against a real runs.db: every Store transition moves a
run exactly along the table, and refuses every move the table does not list."""

from __future__ import annotations

import os

import pytest

from lrfr_tui.runsdb import Store, StoreError, states

# Each transition as the Store method a caller uses, returning whether the run moved.
MOVES = {
    "claim": lambda s, i, tmp: s.claim(i, "sched", [], "local", tmp / "log", tmp),
    "claim_here": lambda s, i, tmp: s.claim_here(i, os.getpid(), from_statuses=states.sources("claim_here")),
    "requeue": None,  # raises instead of returning False: tested below
    "kill_queued": lambda s, i, tmp: s.kill_queued(i),
    "kill_forced": lambda s, i, tmp: s.kill_forced(i, "test"),
    "fail_dead": lambda s, i, tmp: s.fail_if_running(i, "test"),
}


def _run_in(store: Store, status: str) -> int:
    run_id = store.create_run({"name": status}, {}, "test")
    if status == "running":  # held by this (live) process, so no reader settles it as dead
        assert store.claim_here(run_id, os.getpid(), from_statuses=("queued",))
    elif status != "queued":
        store.conn.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id))  # test setup only
    return run_id


@pytest.mark.parametrize("name", [n for n in MOVES if MOVES[n] is not None])
@pytest.mark.parametrize("start", states.STATUSES)
def test_a_transition_moves_exactly_the_runs_the_table_allows(tmp_path, name, start):
    store = Store(tmp_path / "runs.db")
    run_id = _run_in(store, start)
    moved = MOVES[name](store, run_id, tmp_path)
    after = store.conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0]
    allowed = start in states.sources(name)
    assert bool(moved) == allowed
    assert after == (states.TRANSITIONS[name][1] if allowed else start)


@pytest.mark.parametrize("start", states.STATUSES)
def test_requeue_follows_the_table(tmp_path, start):
    store = Store(tmp_path / "runs.db")
    run_id = _run_in(store, start)
    if start in states.sources("requeue"):
        store.requeue(run_id)
        assert store.conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0] == "queued"
    else:
        with pytest.raises(StoreError, match="only killed or failed runs can be resumed"):
            store.requeue(run_id)


def test_a_run_ends_only_in_a_final_status(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = _run_in(store, "running")
    with pytest.raises(ValueError, match="end leaves a run"):
        store.mark_ended(run_id, "queued", None)
    with pytest.raises(ValueError, match="claim_here cannot start from"):
        store.claim_here(run_id, os.getpid(), from_statuses=("finished",))
    store.mark_ended(run_id, "finished", 0)
    assert store.get_run(run_id, settle=False).status == "finished"
