"""One run: live curves, results (with the accuracy-vs-resolution curve), config, log, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Log, Static, TabbedContent, TabPane, TextArea

from engine.errors import LrfrError
from engine.evaluate.registry import benchmark_label, benchmark_names, metric_label
from lrfr_tui import display, results_table
from lrfr_tui.display import short_duration
from lrfr_tui.liveness import reason_headline
from lrfr_tui.screens.polling import PollingScreen
from lrfr_tui.screens.run_actions import RunActions
from lrfr_tui.significance import format_interval
from lrfr_tui.tui_models import (
    HEADLINE_METRICS,
    LOSS_KEYS,
    LR_KEY,
    RATE_KEY,
    DetailModel,
    DetailSnapshot,
    config_text,
)
from lrfr_tui.widgets.loss_plot import CurvePlot, Line
from lrfr_tui.widgets.status_bar import StatusBar
from lrfr_tui.widgets.tables import Table
from lrfr_tui.widgets.theme import status_style

BENCHMARKS = benchmark_names()  # what e offers: those without results
SMOOTHING = (0.0, 0.6, 0.8, 0.9, 0.95, 0.99)
DIST_KEY = "loss_dist"
TABS = ("curves", "results", "log", "config", "artifacts")


def headline_rows(results: list[dict]) -> list[tuple[str, str, Text]]:
    """One row per benchmark and protocol: its headline numbers (the registry's headline metrics; per
    resolution for LR-LFW, highest first) in one cell, with the interval when there is one number."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        if r["metric"] in HEADLINE_METRICS.get(r["benchmark"].partition(":")[0], ("acc",)):
            groups.setdefault((r["benchmark"], r["protocol"]), []).append(r)
    rows = []
    for (bench, protocol), items in groups.items():
        items.sort(key=lambda r: -(r["resolution"] or 10 ** 6))
        cell = Text()
        for i, r in enumerate(items):
            name = f"{r['resolution']}px" if r["resolution"] is not None else metric_label(r["metric"])
            cell.append(("  " if i else "") + f"{name} ", style="dim")
            cell.append(display.format_value(r["metric"], r["value"]), style="bold")
        if len(items) == 1 and items[0].get("ci95"):
            cell.append("  " + format_interval(*items[0]["ci95"], display.is_percent(items[0]["metric"])), style="dim")
        standin = results_table.STANDIN_MARK if any(r.get("standin") for r in items) else ""
        rows.append((benchmark_label(bench) + standin, protocol.removeprefix("insightface_"), cell))
    return rows


def eval_phase_text(phase: dict, eta_s: float | None) -> Text:
    """``  evaluating lfw (2/5) · 12,000 img · 310 img/s · pass ETA 32s`` for the detail header."""
    out = Text("  evaluating ", style="bold")
    out.append(f"{phase.get('benchmark', '?')} ({phase.get('index', '?')}/{phase.get('count', '?')})")
    out.append(f" · {int(phase.get('images') or 0):,} img")
    if phase.get("rate"):
        out.append(f" · {float(phase['rate']):.0f} img/s")
    if eta_s is not None:
        out.append(f" · pass ETA {short_duration(eta_s)}")
    return out


def memory_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if "mem" in k.lower()]


class DetailScreen(RunActions, PollingScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "toggle_log_scale", "Log y"),
        Binding("plus,equals_sign", "smoothing(1)", "Smooth", key_display="+"),
        Binding("minus", "smoothing(-1)", "Smooth less", key_display="-", show=False),
        Binding("f", "toggle_follow", "Follow log", show=False),
        Binding("a", "all_results", "All results", show=False),
        Binding("1", "tab('curves')", "Curves", show=False),
        Binding("2", "tab('results')", "Results", show=False),
        Binding("3", "tab('log')", "Log", show=False),
        Binding("4", "tab('config')", "Config", show=False),
        Binding("5", "tab('artifacts')", "Artifacts", show=False),
        Binding("w", "log_screen", "Log"),
        Binding("k", "kill", "Kill"),
        Binding("r", "resume", "Resume", show=False),
        Binding("d", "duplicate", "Duplicate", show=False),
        Binding("t", "tag", "Tag", show=False),
        Binding("x", "delete", "Delete", show=False),
        Binding("N", "note", "Note", show=False),
        Binding("e", "evaluate_more", "Evaluate on more benchmarks", show=False),
        Binding("g", "figures", "Figures (lrfr analyze)", show=False),
        Binding("y", "copy_path", "Copy run directory", show=False),
    ]

    class Loaded(Message):
        def __init__(self, snapshot: DetailSnapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

    class Gone(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.snapshot: DetailSnapshot | None = None
        self.loads = 0
        self.log_scale = False
        self.smoothing_index = 0
        self.follow = True
        self.buckets = 200
        self._results_key: object = None
        self.all_results = False  # the Results tab: headline numbers (False) or every stored one
        self._artifacts_key: object = None
        self._config_shown = ""

    @property
    def smoothing(self) -> float:
        return SMOOTHING[self.smoothing_index]

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-head", markup=False)
        with TabbedContent(id="detail-tabs"):
            with TabPane("Curves", id="curves"):
                yield CurvePlot("loss", id="plot-loss")
                with Horizontal(id="small-plots"):
                    # loss_dist (~0.005) has its own axis: beside loss_cls (~5) it is a flat line at 0.
                    yield CurvePlot("loss_dist", id="plot-dist")
                    yield CurvePlot("lr", id="plot-lr")
                    yield CurvePlot("images/s", id="plot-rate")
                    yield CurvePlot("GPU memory", id="plot-mem", classes="hidden")
            with TabPane("Results", id="results"):
                with Vertical():
                    yield Table(id="results-table", cursor_type="row")
                    yield Static("", id="results-legend", markup=False)
                    yield CurvePlot("LR-LFW accuracy vs resolution", xlabel="probe px", id="plot-res")
            with TabPane("Log", id="log"):
                yield Log(id="log-view", max_lines=5000, auto_scroll=True)
            with TabPane("Config", id="config"):
                yield TextArea("", id="config-view", read_only=True, show_line_numbers=False, soft_wrap=False)
            with TabPane("Artifacts", id="artifacts"):
                yield Table(id="artifacts-table", cursor_type="row")
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#results-table", DataTable).add_columns("benchmark", "protocol", "metric", "res", "value",
                                                                     "95% interval")
        self.query_one("#artifacts-table", DataTable).add_columns("kind", "path", "")
        self._update_left()
        self.start_polling()

    def on_resize(self) -> None:
        buckets = max(2 * self.size.width, 100)
        if buckets != self.buckets:
            self.buckets = buckets
            self.wake()

    # ------------------------------------------------------------ reading

    def open_model(self) -> DetailModel:
        return DetailModel(self.app.db, self.run_id)

    def read(self, model: DetailModel) -> Loaded:
        return self.Loaded(model.snapshot(self.smoothing, self.buckets, self.app.now()))

    def poll_failed(self, error: LrfrError) -> Gone:
        return self.Gone(str(error))

    def poll_wait(self, message: Loaded) -> float:
        final = message.snapshot.run["status"] in ("finished", "failed", "killed")
        return self.app.poll_s * (3 if final else 1)

    def on_detail_screen_gone(self, message: Gone) -> None:
        self.notify(f"run {self.run_id} is gone: {message.reason}", severity="error", markup=False)
        if self.app.screen is self:
            self.app.pop_screen()

    def on_detail_screen_loaded(self, message: Loaded) -> None:
        snap = message.snapshot
        self.snapshot = snap
        self.loads += 1
        self._show_head(snap)
        self._show_curves(snap)
        self._show_results(snap)
        self._show_log(snap)
        self._show_config(snap)
        self._show_artifacts(snap)
        self._update_left()

    def _show_head(self, snap: DetailSnapshot) -> None:
        run = snap.run
        now = self.app.now()
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(f"run {run['id']} ", "bold")
        head.append(f"{run['name']}  ")
        head.append(run["status"], status_style(self.app, run["status"]))
        total = run.get("total_steps")
        if total:
            head.append(f"  step {run['step']}/{total} ({100 * run['step'] / total:.0f}%)")
        elif run["step"]:
            head.append(f"  step {run['step']}")
        if snap.phase is not None:
            head.append_text(eval_phase_text(snap.phase, snap.eta_s))
        else:
            if snap.eta_s is not None:
                head.append(f"  ETA {short_duration(snap.eta_s)}")
            if snap.images_per_s is not None and run["status"] == "running":
                head.append(f"  {snap.images_per_s:.0f} img/s")
        if snap.gpu:
            mem, util = snap.gpu.get("gpu_mem_gib"), snap.gpu.get("gpu_util")
            head.append("  GPU" + (f" {mem:.1f} GiB" if mem is not None else "")
                        + (f" {util:.0f}%" if util is not None else ""))
        gpus = json.loads(run["gpus"]) if run.get("gpus") else None
        head.append(f"  GPUs {','.join(map(str, gpus))}" if gpus else "  CPU" if run["status"] == "running" else "")
        if run.get("started"):
            end = run.get("ended") or now
            head.append(f"  {display.human_duration(end - run['started'])}", "dim")
        second = Text(no_wrap=True, overflow="ellipsis", style="dim")
        bits = [f"preset {run['preset']}" if run.get("preset") else "", f"group {run['group_name']}"
                if run.get("group_name") else "", " ".join(f"#{t}" for t in snap.tags),
                f"host {run['host']}" if run.get("host") else "",
                f"created {display.human_duration(now - run['created'])} ago"]
        second.append("  ".join(b for b in bits if b))
        if snap.notes:
            second.append(f"  note: {snap.notes[-1]}" + (f" (+{len(snap.notes) - 1})" if len(snap.notes) > 1 else ""),
                          style="italic")
        lines = [head, second]
        if run.get("failure_reason") and run["status"] in ("failed", "killed"):
            reason = reason_headline(run["failure_reason"])
            lines.append(Text(reason, style=status_style(self.app, "failed"), no_wrap=True, overflow="ellipsis"))
        joined = Text("\n").join(lines)
        joined.no_wrap, joined.overflow = True, "ellipsis"  # one line each, cut at the edge, never wrapped
        self.query_one("#detail-head", Static).update(joined)

    def _show_curves(self, snap: DetailSnapshot) -> None:
        curves = snap.curves
        smoothing = f" (smoothing {self.smoothing:g})" if self.smoothing else ""
        scale = " log" if self.log_scale else ""
        self.query_one("#plot-loss", CurvePlot).show(
            [Line(k, curves[k].xs, curves[k].ys) for k in LOSS_KEYS if k in curves and k != DIST_KEY],
            version=("loss", snap.curves_version), log_scale=self.log_scale, title=f"loss{smoothing}{scale}")
        self.query_one("#plot-dist", CurvePlot).show(
            [Line(DIST_KEY, curves[DIST_KEY].xs, curves[DIST_KEY].ys)] if DIST_KEY in curves else [],
            version=("dist", snap.curves_version), log_scale=self.log_scale, title=f"{DIST_KEY}{scale}")
        self.query_one("#plot-lr", CurvePlot).show(
            [Line(LR_KEY, curves[LR_KEY].xs, curves[LR_KEY].ys)] if LR_KEY in curves else [],
            version=("lr", snap.curves_version))
        self.query_one("#plot-rate", CurvePlot).show(
            [Line(RATE_KEY, curves[RATE_KEY].xs, curves[RATE_KEY].ys)] if RATE_KEY in curves else [],
            version=("rate", snap.curves_version))
        mem = memory_keys(list(curves))
        plot = self.query_one("#plot-mem", CurvePlot)
        plot.set_class(not mem, "hidden")
        if mem:
            plot.show([Line(k, curves[k].xs, curves[k].ys) for k in mem], version=("mem", snap.curves_version))

    def _show_results(self, snap: DetailSnapshot) -> None:
        key = (self.all_results, tuple((r["benchmark"], r["protocol"], r["metric"], r["resolution"], r["value"])
                                       for r in snap.results))
        if key == self._results_key:
            return
        self._results_key = key
        table = self.query_one("#results-table", Table)
        table.clear(columns=True)
        if self.all_results:
            self._all_results_rows(table, snap.results)
        else:
            table.add_columns("benchmark", "protocol", "headline")
            for bench, protocol, cell in headline_rows(snap.results):
                table.add_row(bench, protocol, cell)
        legend = [results_table.STANDIN_LEGEND] if any(r.get("standin") for r in snap.results) else []
        if snap.results:
            legend.append("a: headline numbers" if self.all_results else f"a: all {len(snap.results)} numbers")
        self.query_one("#results-legend", Static).update("  ".join(legend))
        curve = snap.resolution_curve
        # Categorical x: 7, 14, 20 px are as far apart as 20 and 112 (the interesting end is not squeezed).
        self.query_one("#plot-res", CurvePlot).show(
            [Line("acc %", [float(i) for i in range(len(curve))], [100 * v for _, v in curve])] if curve else [],
            version=("res", tuple(curve)), xticks=[str(r) for r, _ in curve] if curve else None)

    def _all_results_rows(self, table: Table, results: list[dict]) -> None:
        table.add_columns("benchmark", "protocol", "metric", "res", "value", "95% interval")
        previous = None
        for r in results:
            res = "" if r["resolution"] is None else str(r["resolution"])
            bounds = r.get("ci95")
            interval = format_interval(*bounds, display.is_percent(r["metric"])) if bounds else ""
            group = (r["benchmark"], r["protocol"])
            bench = r["benchmark"] + (results_table.STANDIN_MARK if r.get("standin") else "")
            table.add_row("" if group == previous else bench, "" if group == previous else r["protocol"],
                          metric_label(r["metric"]), Text(res, justify="right"),
                          Text(display.format_value(r["metric"], r["value"]), justify="right"),
                          Text(interval, style="dim", justify="right"))
            previous = group

    def _show_log(self, snap: DetailSnapshot) -> None:
        log = self.query_one("#log-view", Log)
        if snap.log_reset:
            log.clear()
            if snap.log_path is None:
                log.write_line("(no log yet: the run has not started)" if snap.run["status"] == "queued"
                               else "(no log file found for this run)")
        if snap.log_lines:
            log.write_lines(snap.log_lines)

    def _show_config(self, snap: DetailSnapshot) -> None:
        raw = snap.run.get("config") or "{}"
        if raw == self._config_shown:
            return
        self._config_shown = raw
        try:
            text = config_text(json.loads(raw))
        except ValueError:
            text = raw
        self.query_one("#config-view", TextArea).load_text(text)

    def _show_artifacts(self, snap: DetailSnapshot) -> None:
        key = tuple((a["kind"], a["path"]) for a in snap.artifacts)
        if key == self._artifacts_key:
            return
        self._artifacts_key = key
        table = self.query_one("#artifacts-table", DataTable)
        table.clear()
        for a in snap.artifacts:
            exists = Path(a["path"]).exists()
            table.add_row(a["kind"], a["path"], Text("" if exists else "missing", style="dim"))

    def _update_left(self) -> None:
        bits = [f"run {self.run_id}", f"smoothing {self.smoothing:g}", "log y" if self.log_scale else "linear y",
                "following log" if self.follow else "log paused"]
        self.query_one(StatusBar).set_left(" · ".join(bits))

    # ------------------------------------------------------------ actions

    def target_runs(self) -> list[tuple[int, str, str, list[str]]]:
        if self.snapshot is None:
            return []
        run = self.snapshot.run
        return [(self.run_id, run["name"], run["status"], self.snapshot.tags)]

    def benchmarks_missing(self) -> str:
        if self.snapshot is None:
            return ""
        have = {r["benchmark"] for r in self.snapshot.results}
        return " ".join(b for b in BENCHMARKS if b not in have)

    def action_log_screen(self) -> None:
        from lrfr_tui.screens.log_view import LogScreen

        self.app.push_screen(LogScreen(self.run_id, self.snapshot.run["name"] if self.snapshot else ""))

    def action_toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        if self.snapshot is not None:
            self._show_curves(self.snapshot)
        self._update_left()

    def action_smoothing(self, step: int) -> None:
        self.smoothing_index = max(0, min(len(SMOOTHING) - 1, self.smoothing_index + step))
        self._update_left()
        self.wake()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        log = self.query_one("#log-view", Log)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self._update_left()

    def action_tab(self, tab: str) -> None:
        self.query_one("#detail-tabs", TabbedContent).active = tab

    def action_all_results(self) -> None:
        self.all_results = not self.all_results
        if self.snapshot is not None:
            self._show_results(self.snapshot)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        # The arrows work at once: the tab's table (or log) takes the focus, not the tab bar.
        target = {"results": "#results-table", "artifacts": "#artifacts-table", "log": "#log-view",
                  "config": "#config-view"}.get(str(event.pane.id))
        if target:
            self.query_one(target).focus()
        self.wake()
