"""The run state machine: the statuses a run can be in and every transition the store makes.

    queued --claim / claim_here--> running --end / fail_dead / kill_forced--> finished | failed | killed
    queued --kill_queued--> killed          killed | failed --requeue--> queued
    killed | failed --claim_here (resume in this process)--> running

Each transition is one ``Store`` method whose UPDATE is guarded by ``guard(name)``, so of two
processes racing for one run exactly one moves it (the other sees rowcount 0). The table below
is the only place that says which moves are allowed; tests walk it against a real database.
"""

from __future__ import annotations

QUEUED, RUNNING, FINISHED, FAILED, KILLED = "queued", "running", "finished", "failed", "killed"
STATUSES = (QUEUED, RUNNING, FINISHED, FAILED, KILLED)
FINAL_STATUSES = (FINISHED, FAILED, KILLED)
# Runs that still hold (or wait for) a process: they cannot be deleted and are drawn live.
ACTIVE_STATUSES = (QUEUED, RUNNING)
# A run that stopped before its end keeps its directory and checkpoint, so it can be resumed.
RESUMABLE_STATUSES = (KILLED, FAILED)

# name -> (statuses it may start from, status it leaves the run in).
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | tuple[str, ...]]] = {
    # A scheduler hands a queued run to a launcher (Store.claim).
    "claim": ((QUEUED,), RUNNING),
    # This process runs it: a foreground run claims its own queued row, `lrfr resume` a stopped one
    # (Store.claim_here; the caller names which of these it starts from).
    "claim_here": ((QUEUED, *RESUMABLE_STATUSES), RUNNING),
    # `lrfr resume --queue`, the TUI's resume: back to the end of the queue (Store.requeue).
    "requeue": (RESUMABLE_STATUSES, QUEUED),
    # A queued run killed before it started (Store.kill_queued).
    "kill_queued": ((QUEUED,), KILLED),
    # A running run stopped by SIGKILL: nothing else will write its status (Store.kill_forced).
    "kill_forced": ((RUNNING,), KILLED),
    # A running run whose process is gone without a word (Store.fail_if_running, Store.settle_dead).
    "fail_dead": ((RUNNING,), FAILED),
    # The worker's own last word (Store.mark_ended, the "ended" write): it wins over whatever a reader
    # settled meanwhile, since the worker knows how the run really ended.
    "end": (STATUSES, FINAL_STATUSES),
}


def sources(name: str) -> tuple[str, ...]:
    """The statuses transition ``name`` may start from."""
    return TRANSITIONS[name][0]


def guard(name: str, among: tuple[str, ...] | None = None) -> tuple[str, list[str]]:
    """``("status IN (?, ?)", [...])`` for an UPDATE of transition ``name``; ``among`` narrows the
    starting statuses (a ValueError if it names one the table does not allow)."""
    allowed = sources(name)
    chosen = tuple(among) if among is not None else allowed
    bad = [s for s in chosen if s not in allowed]
    if bad or not chosen:
        raise ValueError(f"{name} cannot start from {bad or 'no status'}; it starts from {', '.join(allowed)}")
    return f"status IN ({', '.join('?' * len(chosen))})", list(chosen)


def check_target(name: str, status: str) -> None:
    """A ValueError unless transition ``name`` may leave a run in ``status``."""
    target = TRANSITIONS[name][1]
    allowed = target if isinstance(target, tuple) else (target,)
    if status not in allowed:
        raise ValueError(f"{name} leaves a run {' or '.join(allowed)}, not {status!r}")
