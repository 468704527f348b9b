"""Help: the keys of the screen underneath, the app-wide keys, and the filter language."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from lrfr_tui.runsdb import filters as filter_language_module


def filter_language() -> str:
    """The filter-term table of ``lrfr_tui.query``'s docstring (one source for `lrfr ls` and the TUI)."""
    doc = filter_language_module.__doc__ or ""
    start = doc.find("Filter terms")
    return doc[start:].strip() if start >= 0 else doc.strip()


def filter_language_text() -> Text:
    """The filter language as formatted text: the title bold, each example term bold with its meaning
    beside it, ``code`` bold, and the reST markers (``::``, double backquotes) gone."""
    out = Text()
    lines = filter_language().splitlines()
    out.append("Filter: the runs screen's / (and `lrfr ls`), terms combined with AND\n", style="bold")
    for line in lines[2:]:
        line = line.replace("::", ":")
        if line.startswith("    ") and line.strip():  # an example term, its meaning from column 26
            term, meaning = line[4:30], line[30:]
            out.append("    " + term, style="bold")
            out.append(meaning.strip() + "\n")
            continue
        parts = line.split("``")
        for i, part in enumerate(parts):
            out.append(part, style="bold" if i % 2 else "")
        out.append("\n")
    return out


def keys_text(title: str, bindings: list) -> Text:
    text = Text(f"{title}\n", style="bold")
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.description:
            continue
        key = binding.key_display or binding.key.split(",")[0]
        text.append(f"  {key:>8}  ", style="bold")
        text.append(f"{binding.description}\n")
    return text


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__(classes="dialog")
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box help-box"):
            body = Text()
            name = type(self.under).__name__.removesuffix("Screen") or "this"
            body.append_text(keys_text(f"Keys: {name} screen", getattr(self.under, "BINDINGS", [])))
            body.append_text(keys_text("\nEverywhere", self.app.BINDINGS + [
                Binding("ctrl+p", "command_palette", "Command palette: every action by name"),
                Binding("ctrl+q", "quit", "Quit (running trainings keep running; q on the runs screen)")]))
            if getattr(self.under, "HAS_FILTER", False):  # only where a filter line is (the runs screen)
                body.append("\n")
                body.append_text(filter_language_text())
            body.append("\nescape closes this help", style="dim")
            yield Static(body, markup=False)
