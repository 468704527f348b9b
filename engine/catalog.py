"""The dataset catalog: real datasets registered by name (path + format) in a small JSON file.

Presets name datasets (``casia_webface``, ``ms1m``); a user registers where they live once with
``lrfr data add NAME PATH``. The file is ``$LRFR_CATALOG`` or ``~/.config/lrfr/datasets.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import DatasetError

# folder/recordio: training sets; bin: an insightface verification pack; pairs: an LFW-style image
# tree with a pairs file (LFW, XQLFW); scface and tinyface: those benchmarks' trees as distributed;
# pack: a decoded-face pack (`lrfr data pack`).
FORMATS = ("folder", "recordio", "bin", "pairs", "scface", "tinyface", "pack")
PACK_MANIFEST = "pack.json"  # engine.data.pack.MANIFEST (not imported here: the catalog stays free of torch)


@dataclass
class DatasetEntry:
    name: str
    path: str
    format: str
    pairs: str | None = None  # format "pairs": the pairs file (default: the tree's *pairs*.txt)
    pack: str | None = None  # folder/recordio: a decoded-face pack of it, which training reads instead


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
    if (path / PACK_MANIFEST).is_file():
        return "pack"
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


def looks_like_lfw_tree(root: Path, sample: int = 20) -> bool:
    """Whether ``root`` holds LFW-named images (``<name>/<name>_0001.jpg``), looking at a few folders only."""
    if not root.is_dir():
        return False
    try:
        folders = [d for d in itertools.islice(root.iterdir(), 10 * sample) if d.is_dir()][:sample]
        return any(f.is_file() and f.stem.startswith(d.name + "_") and f.stem[len(d.name) + 1:].isdigit()
                   for d in folders for f in itertools.islice(d.iterdir(), 5))
    except OSError:
        return False


def pairs_file_beside(root: Path) -> Path | None:
    """An LFW-style tree's pairs file next to it (LFW's ``pairs.txt`` and XQLFW's ``xqlfw_pairs.txt`` are
    distributed beside the image folder, not inside it); None unless ``root`` looks like such a tree."""
    if not root.is_dir() or not looks_like_lfw_tree(root):
        return None
    return find_pairs_file(root.parent)


def register(name: str, path: str | Path, fmt: str = "auto", catalog: Path | None = None,
             pairs: str | Path | None = None) -> DatasetEntry:
    """Record ``name -> (path, format)`` in the catalog; ``fmt="auto"`` guesses the format from the files.

    A pairs file makes the dataset a verification set: with ``pairs`` the format is ``pairs`` (auto) and any
    other explicit format is an error. An auto-guessed ``folder`` that is an LFW-style tree with a pairs
    file beside it is refused with the command that registers it as a verification set (``--format
    folder`` registers the images as a training folder on purpose).
    """
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"cannot register {name!r}: {root} does not exist")
    pairs_path = Path(pairs).expanduser().resolve() if pairs else None
    guessed = fmt == "auto"
    if guessed:
        fmt = "pairs" if pairs_path is not None else guess_format(root)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if pairs_path is not None and fmt != "pairs":
        raise DatasetError(f"--pairs {pairs_path} makes {name!r} a verification set (format 'pairs'), but "
                           f"--format {fmt} was given: drop --format or use --format pairs")
    if pairs_path is not None and not pairs_path.is_file():
        raise DatasetError(f"pairs file {pairs_path} does not exist")
    if fmt == "pairs" and not root.is_dir():
        raise DatasetError(f"a 'pairs' dataset is an image tree (LFW-style folders), but {root} is a file")
    beside = pairs_file_beside(root) if pairs_path is None and (fmt == "pairs" or (fmt == "folder" and guessed)) \
        else None
    if fmt == "pairs" and pairs_path is None and find_pairs_file(root) is None:
        hint = f" (found {beside} beside it: pass --pairs {beside})" if beside else ""
        raise DatasetError(f"no pairs file in {root}: pass --pairs PATH{hint}")
    if fmt == "folder" and beside is not None:
        raise DatasetError(
            f"{root} looks like an LFW-style verification tree with its pairs file {beside} beside it; "
            f"register it as a verification set with `lrfr data add {name} {root} --pairs {beside}`, "
            f"or pass --format folder to register its images as a training folder"
        )
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


def set_pack(name: str, pack: str | Path | None, catalog: Path | None = None) -> DatasetEntry:
    """Point the training set ``name`` at its decoded-face pack (None: forget the pack)."""
    catalog = catalog or catalog_path()
    entries = load_catalog(catalog)
    if name not in entries:
        raise DatasetError(f"dataset {name!r} is not registered (see `lrfr data list`)")
    entries[name].pack = str(Path(pack).resolve()) if pack is not None else None
    _save(entries, catalog)
    return entries[name]


def as_dict(entry: DatasetEntry) -> dict[str, str]:
    return asdict(entry)
