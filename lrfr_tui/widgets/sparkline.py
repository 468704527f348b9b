"""Sparklines: a series as a row of block characters, for table cells."""

from __future__ import annotations

import math
from collections.abc import Sequence

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int) -> str:
    finite = [v for v in values if math.isfinite(v)][-width:]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((v - lo) / span * top) if span > 0 else top // 2] for v in finite)
