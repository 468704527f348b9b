"""Run workers on this machine: a plain process, or torchrun for a multi-GPU (DDP) run.

Each worker gets its own process group (so a kill reaches torchrun's children too and a Ctrl-C
in the scheduler's terminal does not), ``CUDA_VISIBLE_DEVICES`` for its GPUs, and its output in
``runs/<id>/train.log``. Arguments are passed as lists, never through a shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import LrfrError
from lrfr_tui.launchers.base import Handle, Launcher, LaunchRequest


def worker_env(request: LaunchRequest) -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the same numbering as nvidia-smi
    # An empty CUDA_VISIBLE_DEVICES hides every GPU: a CPU run must not take one by accident.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in request.gpus)
    env["PYTHONUNBUFFERED"] = "1"
    env["LRFR_SCHEDULED"] = "1"  # the worker keeps the pid recorded here (the process group leader)
    return env


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 = state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_ticks(pid: int | None) -> int | None:
    """When ``pid`` started, in clock ticks after boot (/proc/PID/stat field 22): with the pid, the
    identity of a process that a recycled pid cannot fake."""
    fields = _proc_stat(pid) if pid is not None else None
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_is_worker(pid: int, run_id: int, marker: str = "lrfr_tui.worker", start_ticks: int | None = None) -> bool:
    """Is ``pid`` alive, not a zombie, and running this run (not a recycled pid)?

    With ``start_ticks`` (recorded when the run took the pid) the process must have started then;
    otherwise ``marker`` must appear in its command line: the worker module for launched runs,
    ``lrfr`` for a foreground ``lrfr run`` (whose pid is the CLI process).
    """
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if start_ticks is not None:
        return process_start_ticks(pid) == start_ticks
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    if marker == "lrfr_tui.worker":
        return marker in args and str(run_id) in args
    return any(marker in a for a in args)


def terminate_then_kill(send: Callable[[int], None], alive: Callable[[], bool], grace_s: float) -> None:
    """SIGTERM now (the trainer checkpoints and exits); SIGKILL from a background thread if still
    ``alive()`` after ``grace_s``. ``send(sig)`` delivers a signal (to a group or one pid)."""
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return

    def force() -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not alive():
                return
            time.sleep(0.2)
        try:
            send(signal.SIGKILL)
        except ProcessLookupError:
            pass

    threading.Thread(target=force, daemon=True).start()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class LocalLauncher(Launcher):
    """One worker process; ``torchrun --standalone`` with one process per GPU when a run asks for >1."""

    name = "local"

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen] = {}
        self._exit_codes: dict[int, int] = {}

    def exit_code(self, handle: Handle) -> int | None:
        return self._exit_codes.get(handle.pid) if handle.pid is not None else None

    def command(self, request: LaunchRequest) -> list[str]:
        nproc = len(request.gpus)
        if nproc > 1:
            return [request.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    *request.worker_args()]
        return [request.python, *request.worker_args()]

    def start(self, request: LaunchRequest) -> Handle:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        with request.log_path.open("ab") as log:
            try:
                child = subprocess.Popen(self.command(request), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=worker_env(request),
                                         start_new_session=True, cwd=request.work_dir())
            except OSError as exc:
                raise LrfrError(f"cannot start run {request.run_id}: {exc}") from None
        self._children[child.pid] = child
        return Handle(self.name if len(request.gpus) <= 1 else "torchrun", pid=child.pid)

    def is_alive(self, handle: Handle, run_id: int) -> bool:
        if handle.pid is None:
            return False
        child = self._children.get(handle.pid)
        if child is not None:
            # Our own child: poll() also reaps it, so it never lingers as a zombie.
            if child.poll() is None:
                return True
            self._exit_codes[handle.pid] = child.returncode
            del self._children[handle.pid]
            return False
        # Adopted from an earlier scheduler: look at the process itself (and its group, for torchrun).
        return pid_is_worker(handle.pid, run_id) or (handle.launcher == "torchrun" and group_alive(handle.pid))

    def stop(self, handle: Handle, run_id: int, grace_s: float = 60.0) -> None:
        if handle.pid is None:
            return
        pgid = handle.pid
        terminate_then_kill(lambda sig: os.killpg(pgid, sig),
                            lambda: self.is_alive(handle, run_id) or group_alive(pgid), grace_s)
