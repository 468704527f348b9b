"""The one codec for values in runs.db: metric values with NaN and infinities, per-item outcomes as bits,
config parameters as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

# A stored metric value as SQL (infinities as +-9e999, NaN as NULL): how filters and sorts compare metrics.
VALUE_SQL = "(CASE WHEN special IS NULL THEN value WHEN special = 'inf' THEN 9e999 WHEN special = '-inf' THEN -9e999 END)"


def encode(value: float) -> tuple[float | None, str | None]:
    value = float(value)
    if math.isnan(value):
        return None, "nan"
    if math.isinf(value):
        return None, "inf" if value > 0 else "-inf"
    return value, None


def decode(value: float | None, special: str | None) -> float:
    return float(special) if special else float(value) if value is not None else float("nan")


def pack_outcomes(correct) -> tuple[int, bytes]:
    """(n, bits): a boolean per item as ``numpy.packbits`` bytes (6,000 pairs: 750 bytes)."""
    import numpy as np

    flags = np.asarray(correct, dtype=bool).ravel()
    return len(flags), np.packbits(flags).tobytes()


def unpack_outcomes(n: int, bits: bytes):
    import numpy as np

    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=int(n)).astype(bool)


def decode_param(value: str | None) -> Any:
    try:
        return json.loads(value) if value is not None else None
    except ValueError:
        return value
