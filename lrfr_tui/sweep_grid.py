"""The sweep-grid grammar, shared by `lrfr sweep --grid` and the TUI launch form's grid lines:
``key=v1,v2,...`` per axis (``;`` separates values that are lists), expanded as a product.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import LrfrError


@dataclass(frozen=True)
class GridAxis:
    """One swept key and its values, parsed from ``key=v1,v2,...`` (``;`` separates list values)."""

    key: str
    values: tuple[str, ...]


def parse_axis(text: str) -> GridAxis:
    """``key=v1,v2,...`` (or ``key=[1,2];[3,4]`` for list values); an empty value list is an error,
    since it would queue nothing and look like success."""
    from engine.config import parse_override

    key, values = parse_override(text)
    parts = values.split(";") if ";" in values else values.split(",")
    points = tuple(p.strip() for p in parts if p.strip())
    if not points:
        raise LrfrError(f"{key}: give the values to sweep, e.g. {key}=0.1,0.05")
    return GridAxis(key, points)


def grid_points(axes: Sequence[GridAxis]) -> list[list[str]]:
    """The product of the axes as override lists, first axis slowest (``[[]]`` for no axes)."""
    return [[f"{axis.key}={value}" for axis, value in zip(axes, combo, strict=True)]
            for combo in itertools.product(*(axis.values for axis in axes))]
