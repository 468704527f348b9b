"""The queue: start queued runs when their GPUs are free, and notice runs that died.

One pass (``Scheduler.step``) does two things:

1. reconcile: every ``running`` run whose process (or Slurm job) is gone without having reported
   an end is marked ``failed`` with its log tail; so is one on another host whose heartbeat is
   stale. Runs whose process lives are left alone - including those a previous scheduler (or a
   TUI that was closed) started: restarting the scheduler adopts them.
2. launch: queued runs, in queue order, go to the GPUs that no run of ours holds and whose memory
   use is under a threshold; a run that asks for more GPUs than are free waits while smaller
   runs behind it may start. A machine with no GPU runs one run at a time on the CPU. Slurm runs
   are submitted at once (Slurm does the allocation).

Only one scheduler drives a database at a time (a lock file beside it), and claiming a run is an
atomic ``queued -> running`` update, so nothing is launched twice.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import LaunchConfig
from engine.errors import LrfrError
from lrfr_tui.gpus import GpuDiscovery, GpuDiscoveryError, discover_gpus
from lrfr_tui.journal import journaled, write_spec
from lrfr_tui.launchers import Handle, Launcher, LaunchRequest, get_launcher
from lrfr_tui.launchers.local import pid_is_worker, terminate_then_kill
from lrfr_tui.liveness import STALE_HEARTBEAT_S, death_reason, heartbeat_stale
from lrfr_tui.runsdb import Run, Store, journal_ingest, runs_root
from lrfr_tui.runsdb.states import ACTIVE_STATUSES
from lrfr_tui.worker import EXIT_STORE_UNAVAILABLE


class SchedulerLocked(LrfrError):
    """Another scheduler already drives this database's queue."""


SHARED_LOCK_FOLDER = "lrfr-scheduler-locks"


def _open_lock(path: Path, shared_folder: bool):
    """Open (creating) a lock file. A lock in the host's shared temp directory must stay usable by
    the next user: its folder sticky and world-writable (like /tmp itself) and its file 0666, or a
    second user's scheduler fails on our lock instead of on what is really wrong (say, a runs.db it
    may not write). The lock beside runs.db keeps the folder the user chose as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if shared_folder:
        _share(path.parent, 0o1777)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    if shared_folder:
        _share(path, 0o666)
    return os.fdopen(fd, "r+")


def _share(path: Path, mode: int) -> None:
    # Only the owner may chmod; another user's folder or file is left as it is.
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and (st.st_mode & 0o7777) != mode:
            path.chmod(mode)
    except OSError:
        pass


@dataclass
class Scheduler:
    db: Path
    discover: GpuDiscovery = discover_gpus
    # A GPU with more memory in use than this (by anyone) is busy, even if no run of ours holds it.
    busy_memory_mib: int = 1024
    stale_heartbeat_s: float = STALE_HEARTBEAT_S
    launchers: dict[str, Launcher] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    on_event: Callable[[str], None] | None = None
    # Each run this scheduler saw running that has ended since, once, however it ended (by itself, killed
    # from elsewhere, settled here as dead): `lrfr worker` prints it. The TUI's runs screen announces ends
    # from its own snapshots, so it passes none.
    on_ended: Callable[[Run], None] | None = None

    def __post_init__(self) -> None:
        self.db = Path(self.db).resolve()
        self.store = Store(self.db)
        self.host = socket.gethostname()
        self._lock_fhs: list = []
        self._problems: dict[int, str] = {}  # run -> the journal problem last reported
        self._running: set[int] = set()  # runs running at the end of the previous pass (to tell who ended)
        self._cpu_holder: int | None = None  # the local run the queue was last said to wait for

    # ------------------------------------------------------------ single scheduler per db

    def lock_paths(self) -> list[Path]:
        """The queue's locks: one beside the database, named for the holder to read, and one named
        by the database file's identity (device, inode) in this host's temp directory - a hard link
        or a second path to the same runs.db finds that one taken too."""
        st = self.db.stat()
        by_identity = Path(tempfile.gettempdir()) / SHARED_LOCK_FOLDER / f"{st.st_dev}-{st.st_ino}.lock"
        return [self.db.with_name(self.db.name + ".scheduler.lock"), by_identity]

    def acquire(self) -> None:
        """Take the queue's locks; raises SchedulerLocked naming the holder if another scheduler has one."""
        held = []
        try:
            # lock_paths(): the lock beside runs.db, then the one in the shared temp directory
            for path, shared_folder in zip(self.lock_paths(), (False, True), strict=True):
                fh = _open_lock(path, shared_folder)
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    fh.close()
                    raise SchedulerLocked(f"the queue of {self.db} is already driven by {holder}") from None
                fh.seek(0)
                fh.truncate()
                fh.write(self.name)
                fh.flush()
                held.append(fh)
        except BaseException:
            for fh in held:
                fh.close()
            raise
        self._lock_fhs = held

    def release(self) -> None:
        for fh in self._lock_fhs:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        self._lock_fhs = []

    # ------------------------------------------------------------ launchers

    def launcher(self, name: str) -> Launcher:
        """One launcher per kind for this scheduler (a run's "torchrun" or "foreground" starts locally)."""
        key = "slurm" if name == "slurm" else "local"
        if key not in self.launchers:
            self.launchers[key] = get_launcher(key)
        return self.launchers[key]

    def _say(self, text: str) -> None:
        if self.on_event is not None:
            self.on_event(text)

    # ------------------------------------------------------------ one pass

    def step(self) -> list[int]:
        """Ingest journals, reconcile, then launch what fits. Returns the ids of the runs started in this pass."""
        self.ingest()
        self.reconcile()
        running = self.announce_ended()
        started = self.launch()
        self._running = running | set(started)
        return started

    def announce_ended(self) -> set[int]:
        """Give ``on_ended`` each run running at the end of the previous pass that has ended since. Returns
        the ids running now."""
        now_running = {run.id for run in self.store.runs_with_status("running")}
        for run_id in sorted(self._running - now_running):
            try:
                run = self.store.get_run(run_id, settle=False)
            except LrfrError:
                continue  # removed meanwhile (lrfr rm)
            if run.is_final and self.on_ended is not None:  # not final: re-queued (Slurm requeue, resume)
                self.on_ended(run)
        return now_running

    def ingest(self) -> int:
        """Apply the new records of every running journaled run's journal; how many were applied."""
        total = 0
        for done in journal_ingest.ingest_running(self.store):
            total += done.applied
            if done.problem and self._problems.get(done.run_id) != done.problem:
                self._problems[done.run_id] = done.problem
                self._say(f"run {done.run_id}: its journal is not ingested: {done.problem}")
        return total

    def is_alive(self, run: Run) -> bool:
        if run.launcher == "slurm":
            if not run.job_id:
                return True  # claimed, not submitted yet (or a submit in flight)
            return self.launcher("slurm").is_alive(Handle("slurm", job_id=run.job_id), run.id)
        if run.host and run.host != self.host and run.pid is not None:
            # Not our machine: the heartbeat is all we can see.
            return not heartbeat_stale(run, self.stale_heartbeat_s)
        if run.pid is None:
            # A scheduled run gets its pid right after its claim: until then, trust its heartbeat.
            return not heartbeat_stale(run, self.stale_heartbeat_s)
        if run.launcher in ("foreground", "eval"):
            return pid_is_worker(run.pid, run.id, marker="lrfr", start_ticks=run.pid_start)
        return self.launcher(run.launcher or "local").is_alive(Handle(run.launcher or "local", pid=run.pid), run.id)

    def reconcile(self) -> list[int]:
        """Record the end of running runs whose process is gone: what their worker left in
        pending.jsonl, else failed with the log tail. Returns their ids."""
        ended = []
        for run in self.store.runs_with_status("running"):
            if self.is_alive(run):
                continue
            # Its process is gone, so its journal (if any) is complete: what it says comes first.
            journal_ingest.ingest(self.store, run.id)
            if self.store.get_run(run.id, settle=False).is_final:
                ended.append(run.id)
                continue
            why = "the run's process ended without reporting a final status"
            code = self.launcher(run.launcher or "local").exit_code(Handle(run.launcher or "local", pid=run.pid))
            if code == EXIT_STORE_UNAVAILABLE:
                why = "the run's worker could not write runs.db (locked or disk full) and left no final state"
            settled = self.store.settle_dead(run, death_reason(run, why))
            if settled.is_final:
                ended.append(run.id)  # said with every other end (on_ended), its reason in failure_reason
        return ended

    def free_gpus(self) -> tuple[list[int], bool]:
        """(indices of GPUs free for us, whether this machine has GPUs at all)."""
        try:
            gpus = self.discover()
        except GpuDiscoveryError as exc:
            self._say(f"GPU discovery failed ({exc}); starting nothing until it works again")
            return [], True
        held = set()
        for run in self.store.runs_with_status("running"):
            if run.launcher not in ("slurm", "foreground") and run.gpus:
                held.update(run.gpus)
        free = [g.index for g in gpus if g.index not in held and g.memory_used_mib < self.busy_memory_mib]
        return free, bool(gpus)

    def launch(self) -> list[int]:
        started = []
        queued = self.store.runs_with_status("queued")
        if not queued:
            return started
        free, has_gpus = self.free_gpus()
        local_running = [r for r in self.store.runs_with_status("running") if r.launcher != "slurm"
                         and r.host == self.host]
        cpu_busy = bool(local_running) and not has_gpus
        self._say_who_holds_the_cpu(local_running[0] if cpu_busy else None, queued)
        for run in queued:
            launch = LaunchConfig(**{k: v for k, v in run.config.get("launch", {}).items()})
            if launch.launcher == "slurm":
                if self._start(run, [], "slurm"):
                    started.append(run.id)
                continue
            if not has_gpus:
                if cpu_busy:
                    continue  # one CPU run at a time: two would only slow each other down
                if self._start(run, [], "local"):
                    started.append(run.id)
                    cpu_busy = True
                continue
            need = max(launch.gpus, 0)
            if need > len(free):
                continue
            take, free = free[:need], free[need:]
            if self._start(run, take, "torchrun" if need > 1 else "local"):
                started.append(run.id)
        return started

    def _say_who_holds_the_cpu(self, holder: Run | None, queued: list[Run]) -> None:
        """Once per holder: the queue waits because a run (perhaps a foreground `lrfr run` in another
        terminal) already trains on this GPU-less machine."""
        if holder is None:
            self._cpu_holder = None
            return
        local_queue = [r for r in queued if LaunchConfig(**r.config.get("launch", {})).launcher != "slurm"]
        if holder.id == self._cpu_holder or not local_queue:
            return
        self._cpu_holder = holder.id
        how = "in the foreground (lrfr run)" if holder.launcher == "foreground" else f"via {holder.launcher}"
        self._say(f"run {holder.id} ({holder.name}) holds the CPU, started {how}: {len(local_queue)} queued "
                  f"run(s) start when it ends")

    def _start(self, run: Run, gpus: list[int], launcher_name: str) -> bool:
        launch = LaunchConfig(**run.config.get("launch", {}))
        journal = journaled(launch)
        run_dir = runs_root(self.db) / str(run.id)
        if journal:
            # Where other hosts see it: runs/ may be a link from beside runs.db to a shared filesystem.
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir = run_dir.resolve()
        log_path = run_dir / "train.log"
        if not self.store.claim(run.id, self.name, gpus, launcher_name, log_path, run_dir):
            return False
        request = LaunchRequest(run.id, self.db, run_dir, log_path, gpus, launch, journal=journal)
        try:
            if journal:
                # The worker reads its run from here and never opens runs.db; its journal is ingested each pass.
                write_spec(run_dir, run.id, run.uuid, run.config, self.db)
                journal_ingest.register(self.store, run.id)
            handle = self.launcher(launcher_name).start(request)
        except (LrfrError, OSError) as exc:
            self.store.mark_ended(run.id, "failed", None, f"could not launch: {exc}")
            self._say(f"run {run.id} could not be launched: {exc}")
            return False
        self.store.set_handle(run.id, handle.pid, handle.job_id)
        where = f"GPUs {gpus}" if gpus else ("Slurm job " + str(handle.job_id) if handle.job_id else "CPU")
        self._say(f"run {run.id} started on {where}")
        return True

    # ------------------------------------------------------------ loops

    def run(self, poll_s: float = 2.0, until_empty: bool = False, max_seconds: float | None = None) -> None:
        """Drive the queue until interrupted (or, with ``until_empty``, until nothing is queued or running)."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while True:
            self.step()
            if until_empty and not self.store.runs_with_status(*ACTIVE_STATUSES):
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(poll_s)


def stop_run(store: Store, run: Run, grace_s: float = 60.0, scheduler: Scheduler | None = None) -> str:
    """Kill a run: a queued one is simply marked killed; a running one gets SIGTERM (the trainer
    checkpoints and reports ``killed``), then SIGKILL after ``grace_s``. Returns the final status."""
    if run.status == "queued":
        store.kill_queued(run.id)
        return store.get_run(run.id).status
    if run.status != "running":
        raise LrfrError(f"run {run.id} is {run.status}, not running or queued")
    sched = scheduler or Scheduler(store.path)
    launcher_name = run.launcher or "local"
    handle = Handle(launcher_name, pid=run.pid, job_id=run.job_id)
    launcher = sched.launcher(launcher_name)
    if run.pid is None and run.job_id is None:
        raise LrfrError(f"run {run.id} has no recorded process to stop")
    if launcher_name != "slurm" and run.host != socket.gethostname():
        raise LrfrError(f"run {run.id} runs on {run.host}; kill it from that machine")
    if launcher_name in ("foreground", "eval"):
        # A foreground `lrfr run` is the CLI process itself, not a group of ours: signal just it.
        pid = run.pid
        terminate_then_kill(lambda sig: os.kill(pid, sig), lambda: pid_is_worker(pid, run.id, marker="lrfr", start_ticks=run.pid_start),
                            grace_s)
    else:
        launcher.stop(handle, run.id, grace_s=grace_s)
    deadline = time.monotonic() + grace_s + 5
    while time.monotonic() < deadline:
        journal_ingest.ingest(store, run.id)  # a journaled run reports its end there
        current = store.get_run(run.id)
        if current.is_final:
            return current.status
        if not sched.is_alive(current):
            break
        time.sleep(0.2)
    journal_ingest.ingest(store, run.id)  # its process is gone: its journal is complete
    if (current := store.get_run(run.id)).is_final:
        return current.status
    # It did not report in time: it was forced, and nothing else will write its status.
    store.kill_forced(run.id, "killed by SIGKILL after the grace period")
    return store.get_run(run.id).status
