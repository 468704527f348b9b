"""A results matrix as CSV, Markdown or LaTeX text (`lrfr export`, the TUI's export)."""

from __future__ import annotations

import csv
import io

from lrfr_tui.display import format_value, is_percent
from lrfr_tui.results_table import STANDIN_MARK, Column, Matrix
from lrfr_tui.significance import format_interval


def export_csv(matrix: Matrix) -> str:
    """One row per run: id, run, then each column in display units (percent for accuracies), then (where sources
    are recorded) ``source``: the data each benchmark's values were measured on. Where intervals are stored:
    ``SPEC:ci95_lo`` / ``SPEC:ci95_hi`` per column; with a baseline also ``SPEC:p`` (McNemar p against it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # A ``source`` column (``lfw=standin xqlfw=catalog``) whenever a shown value's source is recorded.
    sourced = any(k is not None for r in matrix.rows for k in r.sources)
    extra = ["source"] if sourced else []
    uncertain = matrix.has_uncertainty()
    tested = matrix.baseline is not None and any(r.significance for r in matrix.rows)
    stats = [f"{c.spec}:{name}" for c in matrix.columns
             for name in ("ci95_lo", "ci95_hi", *(("p",) if tested else ()))] if uncertain else []
    writer.writerow(["id", "run", *(c.spec for c in matrix.columns), *extra, *stats])

    def units(col: Column, value: float | None) -> str:
        return "" if value is None else format_value(col.metric, value)

    for row, label in zip(matrix.rows, matrix.row_labels(), strict=True):
        cells = []
        if uncertain:
            for j, col in enumerate(matrix.columns):
                lo, hi = row.interval(j) or (None, None)
                cells += [units(col, lo), units(col, hi)]
                if tested:
                    test = row.significance[j] if len(row.significance) > j else None
                    cells.append("" if test is None else f"{test.p:.4g}")
        writer.writerow([row.id, label, *(units(c, v) for c, v in zip(matrix.columns, row.values, strict=True)),
                         *([matrix.row_source(row)] if sourced else []), *cells])
    for ref in matrix.references:
        writer.writerow(["", ref.name, *(units(c, v) for c, v in zip(matrix.columns, ref.values, strict=True)),
                         *(["published"] if sourced else []), *([""] * len(stats))])
    return buf.getvalue()


def export_markdown(matrix: Matrix) -> str:
    """A pipe table, best value per column in bold."""
    best = matrix.best()

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| run | " + " | ".join(cell(label) for label in matrix.labels()) + " |",
             "|---|" + "---:|" * len(matrix.columns)]
    for i, (row, label) in enumerate(zip(matrix.rows, matrix.row_labels(), strict=True)):
        cells = []
        for j, col in enumerate(matrix.columns):
            text = format_value(col.metric, row.values[j])
            text = (f"**{text}**" if i in best[j] else text) + row.mark(j)
            bounds = row.interval(j)
            if bounds is not None and row.values[j] is not None:
                text += " " + format_interval(*bounds, is_percent(col.metric))
            cells.append(text)
        lines.append(f"| {cell(label)} | " + " | ".join(cells) + " |")
    for ref in matrix.references:
        values = (format_value(c.metric, v) if v is not None else "" for c, v in zip(matrix.columns, ref.values,
                                                                                      strict=True))
        lines.append(f"| *{cell(ref.name)}* | " + " | ".join(values) + " |")
    lines += [""] + matrix.legend() if matrix.legend() else []
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  STANDIN_MARK: r"\textsuperscript{\dag}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def export_latex(matrix: Matrix) -> str:
    """A booktabs tabular: benchmark headers spanning their columns, best value per column in bold."""
    best = matrix.best()
    n = len(matrix.columns)
    groups: list[tuple[str, int]] = []
    for label in matrix.group_labels():
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1] + 1)
        else:
            groups.append((label, 1))
    lines = ["% lrfr export; needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{l{'r' * n}}}", "\\toprule"]
    head, rules, col = [""], [], 2
    for label, span in groups:
        head.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
        rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
        col += span
    lines.append(" & ".join(head) + " \\\\")
    lines.append(" ".join(rules))
    lines.append(" & ".join(["Run", *(latex_escape(c.short) for c in matrix.columns)]) + " \\\\")
    lines.append("\\midrule")
    for i, (row, label) in enumerate(zip(matrix.rows, matrix.row_labels(), strict=True)):
        cells = [latex_escape(label)]
        for j, c in enumerate(matrix.columns):
            text = format_value(c.metric, row.values[j])
            text = "--" if text == "-" else latex_escape(text)
            text = f"\\textbf{{{text}}}" if i in best[j] else text
            if row.mark(j):
                text += f"$^{{{row.mark(j)}}}$"
            bounds = row.interval(j)
            if bounds is not None and row.values[j] is not None:
                text += f"\\,{{\\scriptsize {format_interval(*bounds, is_percent(c.metric))}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + " \\\\")
    if matrix.references:
        lines.append("\\midrule")
    for ref in matrix.references:
        cells = [f"\\textit{{{latex_escape(ref.name)}}}"]
        for c, v in zip(matrix.columns, ref.values, strict=True):
            cells.append("--" if v is None else f"\\textit{{{latex_escape(format_value(c.metric, v))}}}")
        lines.append(" & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    for text in matrix.legend():
        lines.append(f"\\multicolumn{{{n + 1}}}{{l}}{{\\footnotesize {latex_escape(text)}}} \\\\")
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


EXPORTERS = {"csv": export_csv, "markdown": export_markdown, "latex": export_latex}
