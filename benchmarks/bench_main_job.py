"""The main job as a newcomer runs it: wall time, peak memory and where they go.

Runs exactly the README's command, ``lrfr run --preset tiny``, under GNU ``/usr/bin/time -v``, in a fresh
working directory (a new runs.db) with a fresh ``LRFR_CACHE`` (so the first-time generation of the synthetic
faces and benchmark stand-ins is counted, as on a fresh clone; ``--cache DIR`` reuses a warm cache), and
prints:

* wall time and peak RSS as GNU time reports them (``Maximum resident set size``: the largest single
  process of the job, the figure the OOM killer and a laptop care about);
* the load average before and after, and the CPUs the job may use (figures taken on a busy machine are
  inflated: compare before/after pairs measured back to back);
* the split per phase, from the run's events in runs.db (``data``, ``evaluate``, ``data_source``,
  ``finetune``, ``status``) and the ``training steps`` line of its ``train.log``: start-up, the synthetic
  training faces, training, then each benchmark's evaluation (with the stand-ins' materialisation and the
  fine-tuning inside it), each with its wall time and the peak RSS of the process tree sampled during it.

    python benchmarks/bench_main_job.py                       # this checkout's .venv/bin/lrfr
    python benchmarks/bench_main_job.py --checkout /work/main # another checkout (its .venv)
    python benchmarks/bench_main_job.py --cpus 2              # pinned to 2 CPUs (taskset), as the README says
    python benchmarks/bench_main_job.py --cache ~/.cache/lrfr # warm cache: no first-time generation
    python benchmarks/bench_main_job.py --set train.threads=2 # an experiment (not the README's command)

Not part of the test suite: a speed figure is only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- sampling the process tree's memory


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Sampler:
    """RSS of ``root`` and its descendants every ``period`` s: (time, sum over the tree, largest process)."""

    root: int
    period: float = 0.25
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            tree, todo, pids = _children(), [self.root], []
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(tree.get(pid, []))
            sizes = [_rss(p) for p in pids]
            self.samples.append((time.time(), sum(sizes), max(sizes, default=0)))
            self._stop.wait(self.period)

    def peak(self, t0: float, t1: float) -> tuple[int, int]:
        inside = [(s, m) for t, s, m in self.samples if t0 <= t <= t1]
        return (max((s for s, _ in inside), default=0), max((m for _, m in inside), default=0))


# ---------------------------------------------------------------- what the run recorded


def _train_log_time(path: Path, pattern: str) -> float | None:
    """Unix time of the first train.log line matching ``pattern`` (the log has 1-second resolution)."""
    try:
        for line in path.read_text().splitlines():
            if re.search(pattern, line):
                return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    except OSError:
        return None
    return None


def phases(db: Path, start: float, end: float, run_id: int | None = None) -> tuple[list[tuple[str, float, float]], dict]:
    """(label, t0, t1) per phase of the job (module docstring), and the run's row (the latest run by default)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    run = (conn.execute("select * from runs where id = ?", (run_id,)) if run_id is not None
           else conn.execute("select * from runs order by id desc limit 1")).fetchone()
    events = conn.execute("select kind, message, data, wall from events where run_id = ? order by wall, rowid",
                          (run["id"],)).fetchall()
    steps = conn.execute("select max(step) from metrics where run_id = ?", (run["id"],)).fetchone()[0]
    conn.close()
    run_dir = Path(run["run_dir"]) if run["run_dir"] else db.parent / "runs" / str(run["id"])
    marks: list[tuple[str, float]] = [("start-up (imports, runs.db)", start)]
    first = {e["kind"]: e["wall"] for e in reversed(events)}
    if "data" in first:
        marks.append(("synthetic training faces (generate or check)", first["data"]))
    t_train = _train_log_time(run_dir / "train.log", r" training steps ")
    if t_train is not None:
        marks.append((f"training ({steps} steps)", max(t_train, marks[-1][1])))
    current = None
    for e in events:
        data = json.loads(e["data"]) if e["data"] else {}
        if e["kind"] == "environment":
            marks.append(("evaluation set-up", e["wall"]))
        elif e["kind"] == "evaluate":
            current = data.get("benchmark", e["message"])
            marks.append((f"eval {current}: stand-ins / load", e["wall"]))
        elif e["kind"] == "data_source" and current is not None:
            marks.append((f"eval {current}: embed + protocol", e["wall"]))
        elif e["kind"] == "finetune" and current is not None:
            marks.append((f"eval {current}: fine-tune + its protocol", e["wall"]))
        elif e["kind"] == "status":
            marks.append(("finish (final writes, exit)", e["wall"]))
            current = None
    out = []
    for (label, t0), (_, t1) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        out.append((label, t0, max(t0, t1)))
    return out, dict(run)


# ---------------------------------------------------------------- GNU time


def parse_gnu_time(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().rpartition(": ")
        if sep:
            out[key] = value
    return out


def wall_seconds(text: str) -> float:
    """GNU time's ``h:mm:ss`` or ``m:ss.ss``."""
    parts = [float(p) for p in text.split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def _lrfr(args: argparse.Namespace) -> Path:
    if args.lrfr:
        return Path(args.lrfr)
    exe = Path(args.checkout) / ".venv" / "bin" / "lrfr"
    if not exe.exists():
        sys.exit(f"no {exe}: install the checkout first (python3 -m venv .venv && . .venv/bin/activate && "
                 f"pip install .), or pass --lrfr")
    return exe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", default=str(Path(__file__).resolve().parents[1]),
                        help="the checkout whose .venv/bin/lrfr runs (default: this one)")
    parser.add_argument("--lrfr", default=None, help="the lrfr executable (default: CHECKOUT/.venv/bin/lrfr)")
    parser.add_argument("--cache", default=None,
                        help="LRFR_CACHE to use (default: a fresh empty one, as on a fresh machine)")
    parser.add_argument("--workdir", default=None, help="where runs.db goes (default: a fresh temp dir)")
    parser.add_argument("--cpus", type=int, default=0, help="pin the job to this many CPUs (taskset); 0 = all")
    parser.add_argument("--nice", type=int, default=0, help="run the job under nice -n N (busy machines)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="extra --set key=value (an experiment, no longer the README's command)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir and cache")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not Path("/usr/bin/time").exists():
        sys.exit("GNU time is needed: apt-get install time")

    lrfr = _lrfr(args)
    made: list[Path] = []
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lrfr-mainjob-"))
    if not args.workdir:
        made.append(workdir)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="lrfr-mainjob-cache-"))
    if not args.cache:
        made.append(cache)
    workdir.mkdir(parents=True, exist_ok=True)
    command = [str(lrfr), "run", "--preset", "tiny", *(x for kv in args.overrides for x in ("--set", kv))]
    prefix: list[str] = []
    if args.cpus:
        cpus = sorted(os.sched_getaffinity(0))[: args.cpus]
        prefix += ["taskset", "-c", ",".join(map(str, cpus))]
    if args.nice:
        prefix += ["nice", "-n", str(args.nice)]
    time_file = workdir / "gnu-time.txt"
    env = {**os.environ, "LRFR_CACHE": str(cache), "LRFR_DB": str(workdir / "runs.db")}
    env.pop("LRFR_CATALOG", None)

    load_before = os.getloadavg()
    print(f"command   {' '.join(['lrfr', *command[1:]])}   (in {workdir}, LRFR_CACHE={cache})", flush=True)
    print(f"machine   {os.cpu_count()} CPUs, job on {args.cpus or len(os.sched_getaffinity(0))}; "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    start = time.time()
    log = (workdir / "job-output.txt").open("w")
    proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(time_file), *prefix, *command], cwd=workdir,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid).start()
    code = proc.wait()
    end = time.time()
    sampler.stop()
    log.close()
    load_after = os.getloadavg()

    gnu = parse_gnu_time(time_file.read_text())
    wall = wall_seconds(gnu["Elapsed (wall clock) time (h:mm:ss or m:ss)"])
    peak_kb = int(gnu["Maximum resident set size (kbytes)"])
    split, run = phases(workdir / "runs.db", start, end)

    print(f"exit      {code} (run {run['id']} {run['status']})")
    print(f"wall      {wall:.1f} s ({wall / 60:.2f} min)   user {gnu['User time (seconds)']} s   "
          f"system {gnu['System time (seconds)']} s   CPU {gnu['Percent of CPU this job got']}")
    print(f"peak RSS  {peak_kb / 1024:.0f} MiB ({peak_kb / 1024**2:.2f} GiB), largest process (GNU time)")
    print(f"load avg  after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print()
    print(f"{'phase':<48} {'start s':>8} {'wall s':>8} {'tree RSS':>9} {'max proc':>9}")
    rows = []
    for label, t0, t1 in split:
        tree, biggest = sampler.peak(t0, t1)
        rows.append({"phase": label, "start_s": t0 - start, "wall_s": t1 - t0, "tree_rss_mib": tree / 2**20,
                     "max_proc_rss_mib": biggest / 2**20})
        print(f"{label:<48} {t0 - start:8.1f} {t1 - t0:8.1f} {tree / 2**20:8.0f}M {biggest / 2**20:8.0f}M")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command[1:], "exit_code": code, "wall_s": wall, "peak_rss_kib": peak_kb,
            "load_before": load_before, "load_after": load_after, "cpus": args.cpus or len(os.sched_getaffinity(0)),
            "phases": rows, "gnu_time": gnu}, indent=1))
    if args.keep:
        print(f"\nkept {workdir} (runs.db, runs/, job-output.txt, gnu-time.txt) and {cache}")
    else:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
