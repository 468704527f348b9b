"""`lrfr data check`: count what a registered dataset holds and find what is broken or missing.

Every image is decoded once, so a corrupt file is found here and not hours into a training run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.catalog import DatasetEntry, find_pairs_file
from engine.data.folder import decode_image
from engine.errors import DatasetError

MAX_LISTED = 20


@dataclass
class CheckReport:
    name: str
    format: str
    path: str
    identities: int | None = None
    images: int = 0
    pairs: int | None = None
    folds: int | None = None  # verification sets: the folds the pairs file's header declares
    records_listed: int | None = None  # RecordIO: keys in the .idx (header and identity records included)
    records_read: int | None = None  # RecordIO: of those, read as header, identity record or image
    unreadable: list[str] = field(default_factory=list)  # the first MAX_LISTED, "file: reason"
    unreadable_count: int = 0
    problems: list[str] = field(default_factory=list)  # missing files, wrong counts ...

    @property
    def ok(self) -> bool:
        return not self.unreadable_count and not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _decode_all(report: CheckReport, sources: Iterable[tuple[str, Path | bytes]],
                progress: Callable[[int], None] | None) -> None:
    _count_readable(report, (lambda label=label, src=src: decode_image(src, None, label) for label, src in sources),
                    progress)


def _count_readable(report: CheckReport, reads: Iterable[Callable[[], object]],
                    progress: Callable[[int], None] | None) -> None:
    """Run each read, counting images and the unreadable ones (listing the first MAX_LISTED)."""
    for i, read in enumerate(reads):
        report.images += 1
        try:
            read()
        except DatasetError as exc:
            report.unreadable_count += 1
            if len(report.unreadable) < MAX_LISTED:
                report.unreadable.append(str(exc))
        if progress is not None and i % 100 == 0:
            progress(i)


def check_dataset(entry: DatasetEntry, progress: Callable[[int], None] | None = None) -> CheckReport:
    path = Path(entry.path)
    report = CheckReport(entry.name, entry.format, entry.path)
    try:
        _CHECKS[entry.format](entry, path, report, progress)
    except DatasetError as exc:
        report.problems.append(str(exc))
    return report


def _check_folder(entry, path, report, progress):
    from engine.data.folder import ImageFolderDataset

    ds = ImageFolderDataset(path, size=None)
    report.identities = ds.num_classes
    if ds.empty_folders:
        report.problems.append(f"{len(ds.empty_folders)} identity folders hold no images "
                               f"(e.g. {', '.join(map(str, ds.empty_folders[:3]))})")
    _decode_all(report, ((str(p), p) for p, _ in ds.samples), progress)


def _check_recordio(entry, path, report, progress):
    from engine.data.recordio import RecordIODataset

    rec = path if path.is_file() else path / "train.rec"
    ds = RecordIODataset(rec, rec.with_suffix(".idx"), on_error="raise", size=None)
    report.identities = ds.num_classes
    report.records_listed = ds.records_listed
    report.records_read = (ds.header is not None) + ds.identity_records + len(ds)
    if report.records_read != report.records_listed:
        keys = ", ".join(str(int(k)) for k in ds.unread_keys[:5]) + (", ..." if len(ds.unread_keys) > 5 else "")
        report.problems.append(
            f"{ds.idx_path} lists {report.records_listed} records but {report.records_read} are read "
            f"(header {'yes' if ds.header is not None else 'no'}, {ds.identity_records} identity records, "
            f"{len(ds)} images); not read: keys {keys}"
        )
    _count_readable(report, (lambda i=i: ds[i] for i in range(len(ds))), progress)


def _check_bin(entry, path, report, progress):
    from engine.data.binpack import read_bin

    images, issame = read_bin(path)
    report.pairs = len(issame)
    _decode_all(report, ((f"{path} image {i}", b) for i, b in enumerate(images)), progress)


def _check_pairs(entry, path, report, progress):
    from engine.data.pairs import pair_files

    pairs = Path(entry.pairs) if entry.pairs else find_pairs_file(path)
    if pairs is None:
        raise DatasetError(f"no pairs file in {path}")
    files, issame, folds = pair_files(path, pairs)
    report.pairs = len(issame)
    report.folds = folds
    unique = sorted(set(files))
    report.identities = len({f.parent.name for f in unique})
    _decode_all(report, ((str(f), f) for f in unique), progress)


def _check_scface(entry, path, report, progress):
    from engine.data.scface import scan_scface

    found = scan_scface(path, expected_subjects=130, check=True)
    report.identities = len(found.subjects)
    files = list(found.gallery.values()) + list(found.probes.values())
    _decode_all(report, ((str(f), f) for f in files), progress)


def _check_tinyface(entry, path, report, progress):
    from engine.data.tinyface import tinyface_splits

    splits = tinyface_splits(path, size=112)
    report.identities = len(set(splits["probe"].labels.tolist()))
    files = [f for s in splits.values() for f in s.files]
    _decode_all(report, ((str(f), f) for f in files), progress)


def _check_pack(entry, path, report, progress):
    """A pack: its manifest and file sizes (on opening), then both checksums (every byte read once)."""
    from engine.data.pack import FacePack

    pack = FacePack(path)
    report.identities = pack.num_classes
    report.images = pack.count
    per_image = 3 * pack.size * pack.size
    report.problems.extend(pack.verify(None if progress is None else lambda done: progress(done // per_image)))


_CHECKS = {
    "folder": _check_folder,
    "recordio": _check_recordio,
    "bin": _check_bin,
    "pairs": _check_pairs,
    "scface": _check_scface,
    "tinyface": _check_tinyface,
    "pack": _check_pack,
}
