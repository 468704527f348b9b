"""A DataTable whose Home and End move the cursor to the first and last row (DataTable's own move it to
the first and last column, which a row cursor does not have)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable


class Table(DataTable):
    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]
