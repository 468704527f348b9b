"""The layering rules ARCHITECTURE.md states, checked over the source tree (a refactor cannot quietly break them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRITE_SQL = re.compile(r"\b(INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|REPLACE\s+INTO)\b", re.I)
# Any SQL at all: a query, a schema statement, a pragma, or a call that runs one.
ANY_SQL = re.compile(r"\bSELECT\b.*\bFROM\b|\bFROM\s+(runs|metrics|results|params|tags|notes|events|artifacts|outcomes)\b"
                     r"|\b(INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TEMP\s+)?"
                     r"(TABLE|VIEW|INDEX)|PRAGMA)\b|\.execute(many|script)?\(")
RUN_STORE = ROOT / "lrfr_tui" / "runsdb"
STORE_WRITERS = {RUN_STORE / "store.py", RUN_STORE / "store_records.py", RUN_STORE / "migrations.py",
                 # Applies run journals (a remote worker's writes) and records how far: its bookkeeping
                 # (the journals table) must change in the same transaction as the writes it applies.
                 RUN_STORE / "journal_ingest.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engine_never_imports_the_application():
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[0] == "lrfr_tui")
                 for p in (ROOT / "engine").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_store_writes_to_runs_db():
    writers = []
    for path in (ROOT / "lrfr_tui").rglob("*.py"):
        if path in STORE_WRITERS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if WRITE_SQL.search(line):
                writers.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert writers == []


def test_no_sql_outside_the_run_store():
    """Every read and write of runs.db is a function of lrfr_tui/runsdb/ (the one door to the database)."""
    found = []
    for path in (ROOT / "lrfr_tui").rglob("*.py"):
        if RUN_STORE in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ANY_SQL.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_runs_are_created_only_by_the_use_cases():
    """`lrfr run`, `eval`, `rerun`, `sweep`, `ablate` and the TUI's launch form all create runs through
    lrfr_tui/usecases/submit.py, so the rule that a run executed here is created running with its pid
    (no scheduler can claim it twice) lives in one place."""
    creating = ROOT / "lrfr_tui" / "usecases" / "submit.py"
    callers = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "lrfr_tui").rglob("*.py")
               if p != creating and RUN_STORE not in p.parents
               for n, line in enumerate(p.read_text().splitlines(), 1) if ".create_run(" in line]
    assert callers == []
    assert ".create_run(" in creating.read_text()  # the check looks for the call the use case makes


def test_screens_read_only_through_their_models():
    """Screens and widgets never open runs.db: they read through tui_models / tui_boards (in the poll
    loop of screens/polling.py) and change runs through usecases. The run store's pure vocabulary
    (states, the filter language's help text) is allowed."""
    allowed = {"lrfr_tui.runsdb.states", "lrfr_tui.runsdb.filters"}
    found = []
    for path in [*(ROOT / "lrfr_tui" / "screens").rglob("*.py"), *(ROOT / "lrfr_tui" / "widgets").rglob("*.py"),
                 ROOT / "lrfr_tui" / "app.py"]:
        text = path.read_text()
        imported = {n for n in _imports(path) if n.startswith("lrfr_tui.runsdb") or n == "sqlite3"}
        imported |= {f"lrfr_tui.runsdb.{m}" for m in re.findall(r"from lrfr_tui\.runsdb import (\w+)", text)}
        found += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(imported - allowed - {"lrfr_tui.runsdb"})]
        found += [f"{path.relative_to(ROOT)}: {call}" for call in re.findall(r"\b(open_db|open_reader|Store)\(", text)]
    assert found == []


def test_the_sql_check_sees_sql():
    """The pattern above is not vacuous: it catches the forms the run store itself uses."""
    store_text = (RUN_STORE / "store.py").read_text() + (RUN_STORE / "reads.py").read_text()
    for line in ('rows = conn.execute("SELECT id FROM runs")', '"UPDATE runs SET status=? WHERE id=?"',
                 'conn.executemany(sql, rows)', '"PRAGMA index_list(metrics)"'):
        assert ANY_SQL.search(line), line
    assert not ANY_SQL.search("select the runs you want from the table")
    assert len(ANY_SQL.findall(store_text)) > 20


def _module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, function-local imports included (they hide loops)."""
    modules = {}
    for package in ("engine", "lrfr_tui"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                # `from pkg import sub` imports pkg.sub (and pkg); `from mod import name` imports mod
                subs = {f"{base}.{a.name}" for a in node.names} & modules.keys()
                edges.update(subs or {base})
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_module_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert "lrfr_tui.runsdb.store" in _module_graph()["lrfr_tui.runsdb.connect"]


def test_code_and_docs_never_point_outside_the_repository():
    pattern = re.compile(r"DESIGN\.md|/work/shared|\.\./shared")
    files = [*ROOT.glob("*.md"), *(ROOT / "engine").rglob("*.py"), *(ROOT / "engine").rglob("*.toml"),
             *(ROOT / "lrfr_tui").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in [pattern.search(p.read_text())] if m]
    assert hits == []


def test_stable_views_read_what_lrfr_shows(tmp_path):
    """run_summary / latest_results / latest_metrics, read with plain sqlite3 as a user's script would,
    agree with lrfr's own reads (a re-evaluation's row wins; NaN kept as 'nan')."""
    import math
    import sqlite3

    from lrfr_tui import runsdb
    from lrfr_tui.runsdb import Store

    store = Store(tmp_path / "runs.db")
    run_id = store.create_run({"name": "a"}, {}, "x")
    store.set_tags(run_id, ["paper", "best"])
    store.add_metrics(run_id, [("loss", 1, 5.0, 1.0), ("loss", 2, float("nan"), 2.0), ("lr", 1, 0.1, 1.0)])
    store.add_results(run_id, [("lfw", "insightface_10fold", "acc", None, 0.90)], source={"kind": "standin",
                                                                                          "dataset": "standin-test"})
    store.add_results(run_id, [("lfw", "insightface_10fold", "acc", None, 0.95)], source={"kind": "standin",
                                                                                          "dataset": "standin-test"})
    store.mark_ended(run_id, "finished", 0)
    gone = store.create_run({"name": "b"}, {}, "x")
    store.set_deleted([gone], force=True)
    store.close()
    conn = sqlite3.connect(tmp_path / "runs.db")
    assert conn.execute("SELECT id, name, status, tags FROM run_summary").fetchall() == [(run_id, "a", "finished",
                                                                                          "best,paper")]
    rows = conn.execute("SELECT benchmark, metric, value, source_kind FROM latest_results").fetchall()
    assert rows == [("lfw", "acc", 0.95, "standin")]
    assert runsdb.latest_results(conn, [run_id])[run_id][("lfw", "insightface_10fold", "acc", None)] == 0.95
    metrics = dict((k, (s, v, sp)) for k, s, v, sp in conn.execute(
        "SELECT key, step, value, special FROM latest_metrics WHERE run_id = ?", (run_id,)))
    assert metrics == {"loss": (2, None, "nan"), "lr": (1, 0.1, None)}
    assert math.isnan(float(metrics["loss"][2]))


def test_no_module_of_the_app_is_over_500_lines():
    """A module that outgrows a screenful of concerns is split by job (ARCHITECTURE.md)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "lrfr_tui").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
