"""Numbers and durations as the app shows them, and run-id lists as users type them."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from engine.errors import LrfrError
from engine.evaluate.registry import better_direction, is_percent  # noqa: F401  (the app's names for the engine's rules)


def format_value(metric: str, value: float | None) -> str:
    """Accuracies, ranks and mAP as percentages with 2 decimals; other metrics to 4 significant digits."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{100 * value:.2f}" if is_percent(metric) else f"{value:.4g}"


def format_delta(metric: str, delta: float | None) -> str:
    if delta is None:
        return ""
    if not math.isfinite(delta):
        return str(delta)
    return f"{100 * delta:+.2f}" if is_percent(metric) else f"{delta:+.4g}"


def parse_run_ids(values: Iterable[str]) -> list[int]:
    """``--runs 3 --runs 5,7-9`` -> [3, 5, 7, 8, 9] (order kept, duplicates dropped)."""
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo or hi - lo > 100_000:
                    raise LrfrError(f"run range {part!r} is not valid")
                out.extend(range(lo, hi + 1))
            elif part.isdigit():
                out.append(int(part))
            else:
                raise LrfrError(f"{part!r} is not a run id (give ids like 3, 5,7 or 10-14)")
    return list(dict.fromkeys(out))


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def json_safe(obj: Any) -> Any:
    """NaN and infinities as the strings "nan", "inf", "-inf" (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def short_duration(seconds: float | None) -> str:
    """3s 4m 2h 5d: one unit, for narrow columns."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
