"""The dataset catalog: real datasets registered by name (path + format) in a small JSON file.

Presets name datasets (``casia_webface``, ``ms1m``); a user registers where they live once with
``lrfr data add NAME PATH``. The file is ``$LRFR_CATALOG`` or ``~/.config/lrfr/datasets.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import DatasetError

# folder/recordio: training sets; bin: an insightface verification pack; pairs: an LFW-style image
# tree with a pairs file (LFW, XQLFW); scface and tinyface: those benchmarks' trees as distributed.
FORMATS = ("folder", "recordio", "bin", "pairs", "scface", "tinyface")


@dataclass
class DatasetEntry:
    name: str
    path: str
    format: str
    pairs: str | None = None  # format "pairs": the pairs file (default: the tree's *pairs*.txt)


def catalog_path() -> Path:
    env = os.environ.get("LRFR_CATALOG")
    return Path(env) if env else Path.home() / ".config" / "lrfr" / "datasets.json"


def load_catalog(path: Path | None = None) -> dict[str, DatasetEntry]:
    path = path or catalog_path()
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: DatasetEntry(name=name, **entry) for name, entry in raw.items()}
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"dataset catalog {path} is unreadable ({exc}); fix or delete it") from None


def _save(entries: dict[str, DatasetEntry], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: {k: v for k, v in asdict(e).items() if k != "name" and v is not None}
            for name, e in sorted(entries.items())}
    # Write-then-rename so a crash never leaves a half-written catalog.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".datasets-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def guess_format(path: Path) -> str:
    """The format a path most likely holds, from the files the real distributions contain."""
    if path.is_file():
        return "bin" if path.suffix == ".bin" else "recordio" if path.suffix == ".rec" else "folder"
    if (path / "train.rec").exists():
        return "recordio"
    if (path / "mugshot_frontal_cropped_all").is_dir():
        return "scface"
    if (path / "Testing_Set").is_dir() or (path / "Probe").is_dir():
        return "tinyface"
    if find_pairs_file(path) is not None:
        return "pairs"
    return "folder"


def find_pairs_file(root: Path) -> Path | None:
    """``pairs.txt`` (LFW) or ``*pairs*.txt`` (e.g. XQLFW's ``xqlfw_pairs.txt``) in a tree's root."""
    if (root / "pairs.txt").is_file():
        return root / "pairs.txt"
    found = sorted(root.glob("*pairs*.txt"))
    return found[0] if found else None


def register(name: str, path: str | Path, fmt: str = "auto", catalog: Path | None = None,
             pairs: str | Path | None = None) -> DatasetEntry:
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"cannot register {name!r}: {root} does not exist")
    fmt = guess_format(root) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    pairs_path = Path(pairs).expanduser().resolve() if pairs else None
    if fmt == "pairs" and pairs_path is None and find_pairs_file(root) is None:
        raise DatasetError(f"no pairs file in {root}: pass --pairs PATH")
    if pairs_path is not None and not pairs_path.is_file():
        raise DatasetError(f"pairs file {pairs_path} does not exist")
    catalog = catalog or catalog_path()
    entries = load_catalog(catalog)
    entries[name] = DatasetEntry(name=name, path=str(root), format=fmt,
                                 pairs=str(pairs_path) if pairs_path else None)
    _save(entries, catalog)
    return entries[name]


def lookup(name: str) -> DatasetEntry:
    entries = load_catalog()
    if name not in entries:
        raise DatasetError(
            f"dataset {name!r} is not registered; register it with "
            f"`lrfr data add {name} /path/to/{name}` (catalog: {catalog_path()})"
        )
    entry = entries[name]
    if not Path(entry.path).exists():
        raise DatasetError(f"dataset {name!r} is registered at {entry.path}, which no longer exists")
    return entry


def as_dict(entry: DatasetEntry) -> dict[str, str]:
    return asdict(entry)
