"""Run workers as Slurm jobs, submitted through submitit.

One job per run, named ``lrfr-<run_id>``: ``launch.nodes`` nodes with one task each and the run's
GPUs per node (``--gres=gpu:N``), ``cpus_per_task``, memory, time limit and partition from
``launch``. Each task (``srun`` inside the batch script, as submitit writes it) runs ``run_worker``
below, which starts its node's command (``task_command``): ``python -m lrfr_tui.worker``, under
``torchrun --standalone`` for N > 1 GPUs on one node, or ``torchrun --nnodes --node-rank`` with a
rendezvous on the job's first node for several nodes. Its stdout/stderr are appended to the run's
``train.log``, so ``lrfr logs`` and the scheduler's log tail see the same output as for a local run.
submitit's own files (the sbatch script, and ``<job>_<task>_log.err`` if a task could not even start
Python) are in ``runs/<id>/slurm/``. By default (``launch.journal=auto``) the worker is journaled:
it never opens runs.db, which stays on the scheduler's disk (lrfr_tui/journal.py).

Stopping: ``scancel --signal=TERM JOB`` signals every process of the job's steps (with
proctrack/linuxproc or cgroup: the whole process tree under slurmstepd, on every node), so each rank
gets SIGTERM directly; the ranks agree to stop at the same step, rank 0 checkpoints and records
``killed``; ``scancel JOB`` follows after the grace period if the job is still there. ``--full`` is
deliberately not used: it also signals the batch shell, whose death ends the job and SIGKILLs the
worker before it can checkpoint (measured on Slurm 22.05). Near the time limit Slurm sends the same
SIGTERM (``--signal=TERM@S``), so a job that runs out of time checkpoints too; with
``launch.slurm_requeue`` it sends SIGUSR1 instead (``--signal=USR1@S --requeue``), on which the
worker checkpoints and requeues its job (``scontrol requeue``), which resumes the run when it starts.

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
import signal
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
    """The worker's argument list in a one-node job: torchrun with one process per GPU for N > 1."""
    return task_command(request.python, request.worker_args(), 1, request.launch.gpus)


def rendezvous_port(job_id: str) -> int:
    """The first node's rendezvous port: per job, so two jobs sharing a node do not meet."""
    return 20000 + (int(job_id) % 20000 if str(job_id).isdigit() else 0)


def task_command(python: str, worker_args: list[str], nodes: int, gpus: int, node_rank: int = 0,
                 master: str = "", port: int = 0) -> list[str]:
    """What one task (one per node) runs: the worker; under torchrun for several GPUs or nodes.

    Several nodes: ``torchrun --nnodes --node-rank`` with a static rendezvous on the first node, so
    that global rank 0 (the one that writes checkpoints and the journal) is on the first node.
    """
    nproc = max(gpus, 1)
    if nodes <= 1:
        if gpus > 1:
            return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker_args]
        return [python, *worker_args]
    return [python, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node-rank={node_rank}",
            f"--nproc-per-node={nproc}", f"--master-addr={master}", f"--master-port={port}", *worker_args]


def _this_task(nodes: int) -> tuple[int, str, int]:
    """(node rank, first node's host name, rendezvous port) of this Slurm task: one task per node, so the
    task's index (SLURM_PROCID) is the node's."""
    if nodes <= 1:
        return 0, "", 0
    import submitit

    env = submitit.JobEnvironment()
    return env.global_rank, env.hostnames[0], rendezvous_port(str(env.job_id).split("_")[0])


def run_worker(python: str, worker_args: list[str], nodes: int, gpus: int, log_path: str, cwd: str,
               requeue: bool = False) -> int:
    """What each Slurm task executes (pickled by submitit, so it lives at module level).

    Runs its node's command (``task_command``) with stdout/stderr appended to ``log_path`` and returns
    its exit code; the worker records the run's status itself (in its journal, or runs.db).
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if gpus <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run must not take a GPU of the node by accident
    # (With --gres=gpu:N Slurm has already set CUDA_VISIBLE_DEVICES to the job's GPUs.)
    job_id = os.environ.get("SLURM_JOB_ID", "?")
    node_rank, master, port = _this_task(nodes)
    command = task_command(python, worker_args, nodes, gpus, node_rank, master, port)
    who = f"slurm job {job_id}" + (f" task {node_rank}" if node_rank else "")
    if requeue:
        # Slurm's pre-timeout SIGUSR1 is for the trainers (each installs its handler); torchrun's agent and
        # this process must not die of it meanwhile: ignored here, and so in the children until they handle it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"{_now()} slurm job {job_id} on {socket.gethostname()}"
                  f"{f' (node {node_rank} of {nodes})' if nodes > 1 else ''}: {' '.join(command)}\n".encode())
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd)
        except OSError as exc:
            log.write(f"{_now()} {who}: cannot start the worker: {exc}\n".encode())
            return 127
        # SIGTERM from scancel/the time limit reaches the child directly (same job step); this
        # process (submitit's runner) ignores it and just waits for the child's exit code.
        code = child.wait()
        log.write(f"{_now()} {who}: worker exited with code {code}\n".encode())
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

    def __init__(self, poll_s: float = 2.0, extra_parameters: dict | None = None) -> None:
        self.poll_s = poll_s
        # Site-specific sbatch settings over the computed ones (e.g. {"account": "abc"}, or the tests' 2 tasks
        # on one node standing in for 2 nodes: {"nodes": 1, "ntasks_per_node": 2}).
        self.extra_parameters = dict(extra_parameters or {})

    # ------------------------------------------------------------ start

    def executor_parameters(self, request: LaunchRequest) -> dict:
        """``SlurmExecutor.update_parameters`` keywords for ``request`` (no sbatch needed to compute)."""
        launch = request.launch
        minutes = int(launch.slurm_time_min)
        # SIGTERM (SIGUSR1 to requeue) this many seconds before the time limit, so the worker checkpoints in time.
        signal_s = 120 if minutes <= 0 else min(120, max(10, minutes * 60 // 5))
        params: dict = {
            "job_name": job_name(request.run_id),
            "nodes": int(launch.nodes),
            "ntasks_per_node": 1,  # one task per node; it starts the node's processes (torchrun)
            # None leaves the flag out of the sbatch script: the partition's default limit.
            "time": minutes if minutes > 0 else None,
            "use_srun": True,
            # The job starts beside runs.db (a journaled one: in its run directory, since compute
            # nodes need not see runs.db), not wherever the scheduler happened to be started from.
            "additional_parameters": {"signal": f"{'USR1' if launch.slurm_requeue else 'TERM'}@{signal_s}",
                                      "chdir": str(request.work_dir())},
        }
        if launch.slurm_requeue:
            params["additional_parameters"]["requeue"] = True
        if launch.slurm_cpus_per_task > 0:
            params["cpus_per_task"] = int(launch.slurm_cpus_per_task)
        if launch.gpus > 0:
            params["gres"] = f"gpu:{int(launch.gpus)}"
        if launch.slurm_partition:
            params["partition"] = launch.slurm_partition
        if launch.slurm_mem_gb > 0:
            params["mem"] = f"{int(launch.slurm_mem_gb)}G"
        params.update(self.extra_parameters)
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
                job = executor.submit(run_worker, request.python, request.worker_args(), int(request.launch.nodes),
                                      int(request.launch.gpus), str(request.log_path), str(cwd),
                                      bool(request.launch.slurm_requeue))
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
