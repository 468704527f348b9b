"""Run workers as Slurm jobs, submitted through submitit.

One job per run, named ``lrfr-<run_id>``: one task on one node with the run's GPUs
(``--gres=gpu:N``), ``cpus_per_task``, memory, time limit and partition from ``launch``. The
task (``srun`` inside the batch script, as submitit writes it) runs ``run_worker`` below, which
starts ``python -m lrfr_tui.worker`` (under ``torchrun --standalone`` for N > 1 GPUs) with its
stdout/stderr appended to the run's ``train.log``, so ``lrfr logs`` and the scheduler's log tail
see the same output as for a local run. submitit's own files (the sbatch script, and its log
``<job>_0_log.err`` if the job could not even start Python) are in ``runs/<id>/slurm/``.

Stopping: ``scancel --signal=TERM JOB`` signals every process of the job's steps (with
proctrack/linuxproc or cgroup: the whole process tree under slurmstepd), so the worker gets
SIGTERM directly, checkpoints and records ``killed``; ``scancel JOB`` follows after the grace
period if the job is still there. ``--full`` is deliberately not used: it also signals the batch
shell, whose death ends the job and SIGKILLs the worker before it can checkpoint (measured on
Slurm 22.05). Near the time limit Slurm sends the same SIGTERM (``--signal=TERM@S``), so a job
that runs out of time checkpoints too.

``is_alive`` asks ``squeue`` (accounting may be off, so never ``sacct``): a job it no longer lists
(or lists as COMPLETED/FAILED/...) is not alive; when squeue cannot answer at all (not installed,
controller down) the job counts as alive. Arguments are always lists, never a shell string.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from engine.errors import LrfrError
from lrfr_tui.launchers.base import Handle, Launcher, LaunchRequest

# squeue states after which the job's processes are gone (squeue keeps a finished job for MinJobAge).
FINISHED_STATES = frozenset({
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
    "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT",
})
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
SQUEUE_TIMEOUT_S = 30.0
# submitit shell-quotes every value it writes into the batch script, but a quoted line break still ends an
# ``#SBATCH`` comment line, and what follows it runs as a shell command: such values are refused.
LINE_BREAKS = ("\n", "\r", "\0")


def job_name(run_id: int) -> str:
    return f"lrfr-{run_id}"


def worker_command(request: LaunchRequest) -> list[str]:
    """The worker's argument list inside the job: torchrun with one process per GPU for N > 1."""
    nproc = request.launch.gpus
    if nproc > 1:
        return [request.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                *request.worker_args()]
    return [request.python, *request.worker_args()]


def run_worker(command: list[str], log_path: str, cwd: str, hide_gpus: bool) -> int:
    """What the Slurm task executes (pickled by submitit, so it lives at module level).

    Runs ``command`` with stdout/stderr appended to ``log_path`` and returns its exit code; the
    worker records the run's final status in runs.db itself.
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run must not take a GPU of the node by accident
    # (With --gres=gpu:N Slurm has already set CUDA_VISIBLE_DEVICES to the job's GPUs.)
    job_id = os.environ.get("SLURM_JOB_ID", "?")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"{_now()} slurm job {job_id} on {socket.gethostname()}: {' '.join(command)}\n".encode())
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd)
        except OSError as exc:
            log.write(f"{_now()} slurm job {job_id}: cannot start the worker: {exc}\n".encode())
            return 127
        # SIGTERM from scancel/the time limit reaches the child directly (same job step); this
        # process (submitit's runner) ignores it and just waits for the child's exit code.
        code = child.wait()
        log.write(f"{_now()} slurm job {job_id}: worker exited with code {code}\n".encode())
    return code


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LrfrError(f"cannot submit to Slurm: {tool} not found on PATH")
    return path


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SlurmLauncher(Launcher):
    """One Slurm job per run (submitit ``SlurmExecutor``); the job id is the handle."""

    name = "slurm"

    def __init__(self, poll_s: float = 2.0) -> None:
        self.poll_s = poll_s

    # ------------------------------------------------------------ start

    def executor_parameters(self, request: LaunchRequest) -> dict:
        """``SlurmExecutor.update_parameters`` keywords for ``request`` (no sbatch needed to compute)."""
        launch = request.launch
        minutes = int(launch.slurm_time_min)
        # SIGTERM this many seconds before the time limit, so the worker checkpoints in time.
        signal_s = 120 if minutes <= 0 else min(120, max(10, minutes * 60 // 5))
        params: dict = {
            "job_name": job_name(request.run_id),
            "nodes": 1,
            "ntasks_per_node": 1,
            # None leaves the flag out of the sbatch script: the partition's default limit.
            "time": minutes if minutes > 0 else None,
            "use_srun": True,
            # The job starts beside runs.db (a journaled one: in its run directory, since compute
            # nodes need not see runs.db), not wherever the scheduler happened to be started from.
            "additional_parameters": {"signal": f"TERM@{signal_s}", "chdir": str(request.work_dir())},
        }
        if launch.slurm_cpus_per_task > 0:
            params["cpus_per_task"] = int(launch.slurm_cpus_per_task)
        if launch.gpus > 0:
            params["gres"] = f"gpu:{int(launch.gpus)}"
        if launch.slurm_partition:
            params["partition"] = launch.slurm_partition
        if launch.slurm_mem_gb > 0:
            params["mem"] = f"{int(launch.slurm_mem_gb)}G"
        return params

    def check_script_values(self, request: LaunchRequest) -> dict:
        """The executor parameters, after checking every value the batch script will hold; LrfrError if unsafe.

        The launch config is validated already (``engine.config.validate``); the paths (runs.db's folder,
        the run folder, the Python executable) come from elsewhere and are checked here.
        """
        params = self.executor_parameters(request)
        values = {"python executable": request.python, "run folder": str(self._folder(request))}
        for key, value in params.items():
            for sub, item in (value.items() if isinstance(value, dict) else [("", value)]):
                values[f"--{(sub or key).replace('_', '-')}"] = str(item)
        for what, value in values.items():
            if any(c in value for c in LINE_BREAKS):
                raise LrfrError(f"cannot submit run {request.run_id} to Slurm: the {what} value {value!r} "
                                "contains a line break, which would end a line of the sbatch script")
        return params

    @staticmethod
    def _folder(request: LaunchRequest) -> Path:
        return (request.run_dir / "slurm").expanduser().absolute()  # as submitit stores it

    def sbatch_script(self, request: LaunchRequest) -> str:
        """The batch script ``start`` has submitit write for ``request`` (made here without a cluster)."""
        from submitit.slurm.slurm import _make_sbatch_string

        params = self.check_script_values(request)
        folder = self._folder(request)
        # submitit's SlurmExecutor._submitit_command_str, with our python (SlurmExecutor needs srun to exist).
        command = " ".join([shlex.quote(request.python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
        return _make_sbatch_string(command=command, folder=folder, **params)

    def start(self, request: LaunchRequest) -> Handle:
        params = self.check_script_values(request)
        for tool in ("sbatch", "squeue", "srun"):
            _require(tool)
        try:
            import submitit
        except ImportError:
            raise LrfrError("cannot submit to Slurm: the submitit package is not installed "
                            "(pip install submitit)") from None
        folder = self._folder(request)
        folder.mkdir(parents=True, exist_ok=True)
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=folder, python=shlex.quote(request.python))
        executor.update_parameters(**params)
        cwd = request.work_dir()
        try:
            # submitit prints sbatch's stderr on failure; it goes into the error message instead.
            with contextlib.redirect_stderr(io.StringIO()):
                job = executor.submit(run_worker, worker_command(request), str(request.log_path), str(cwd),
                                      request.launch.gpus <= 0)
        except Exception as exc:  # sbatch refused (bad partition, too many CPUs, controller down ...)
            detail = _last_line(str(exc)) or type(exc).__name__
            raise LrfrError(f"cannot submit run {request.run_id} to Slurm: {detail}") from None
        with request.log_path.open("a") as log:
            log.write(f"{_now()} submitted to Slurm as job {job.job_id} ({job_name(request.run_id)})\n")
        return Handle(self.name, job_id=str(job.job_id))

    # ------------------------------------------------------------ state

    def job_state(self, handle: Handle, run_id: int) -> str | None:
        """The job's squeue state (``RUNNING``, ``PENDING`` ...); None when it is gone or not this run's.

        ``UNKNOWN`` when squeue cannot answer (not installed here, controller unreachable): the
        job may well be running, so nobody should declare the run dead on that alone (its
        heartbeat in runs.db can tell).
        """
        return self._squeue(handle, run_id)[0]

    def describe(self, handle: Handle, run_id: int) -> str | None:
        """``"PENDING (Resources)"``, ``"RUNNING"`` ... for a status line; None when the job is gone."""
        state, reason = self._squeue(handle, run_id)
        if state is None:
            return None
        return f"{state} ({reason})" if reason and reason not in ("None", "(null)") else state

    def _squeue(self, handle: Handle, run_id: int) -> tuple[str | None, str]:
        if not handle.job_id:
            return None, ""
        squeue = shutil.which("squeue")
        if squeue is None:
            return "UNKNOWN", "squeue not found on PATH"
        try:
            out = subprocess.run([squeue, "-h", "-j", str(handle.job_id), "-o", "%T|%j|%r"], capture_output=True,
                                 text=True, timeout=SQUEUE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "UNKNOWN", f"squeue: {exc}"
        if out.returncode != 0:
            if "invalid job id" in out.stderr.lower():
                return None, ""  # purged from the controller (finished more than MinJobAge ago)
            return "UNKNOWN", _last_line(out.stderr) or f"squeue exit {out.returncode}"
        for line in out.stdout.splitlines():
            state, _, rest = line.strip().partition("|")
            name, _, reason = rest.partition("|")
            # A job id can come back after a cluster lost its state: trust it only under our name.
            if name == job_name(run_id) and state:
                return state.split()[0], reason.strip()
        return None, ""

    def is_alive(self, handle: Handle, run_id: int) -> bool:
        state = self.job_state(handle, run_id)
        return state is not None and state not in FINISHED_STATES

    # ------------------------------------------------------------ stop

    def stop(self, handle: Handle, run_id: int, grace_s: float = 60.0) -> None:
        state = self.job_state(handle, run_id)
        if state is None or state in FINISHED_STATES:
            return
        scancel = shutil.which("scancel")
        if scancel is None:
            raise LrfrError(f"cannot stop Slurm job {handle.job_id}: scancel not found on PATH")
        if state in PENDING_STATES:
            # Not started: nothing to checkpoint.
            subprocess.run([scancel, str(handle.job_id)], capture_output=True, timeout=SQUEUE_TIMEOUT_S,
                           check=False)
            return
        subprocess.run([scancel, "--signal=TERM", str(handle.job_id)], capture_output=True,
                       timeout=SQUEUE_TIMEOUT_S, check=False)
        threading.Thread(target=self._force_after, args=(handle, run_id, grace_s, scancel), daemon=True).start()

    def _force_after(self, handle: Handle, run_id: int, grace_s: float, scancel: str) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not self.is_alive(handle, run_id):
                return
            time.sleep(min(self.poll_s, max(0.05, deadline - time.monotonic())))
        if self.is_alive(handle, run_id):
            # Plain scancel: SIGTERM again, then SIGKILL after the cluster's KillWait.
            subprocess.run([scancel, str(handle.job_id)], capture_output=True, timeout=SQUEUE_TIMEOUT_S,
                           check=False)
