"""`lrfr data pack` and `lrfr data align`: preparing real faces for training (registered on the `data` group).

No `from __future__ import annotations`: Typer reads these annotations.
"""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from engine.errors import LrfrError
from lrfr_tui.cli_common import JsonOpt, err, out

MAX_LISTED = 20


def _progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


def data_pack(name: str,
              out_dir: Annotated[Path | None, typer.Option(
                  "--out", help="where the pack goes (default: $LRFR_CACHE/packs/NAME-SIZEpx)")] = None,
              size: Annotated[int, typer.Option(help="face size in px (the model's input size)")] = 112,
              workers: Annotated[int, typer.Option(help="decoding processes")] = 2,
              skip_unreadable: Annotated[bool, typer.Option(
                  "--skip-unreadable", help="leave unreadable images out (listed in the manifest) instead of "
                                            "stopping at the first")] = False,
              as_json: JsonOpt = False) -> None:
    """Decode the training set NAME once into a memory-mapped pack that training reads with no decoding.

    The catalog entry NAME then points at the pack: runs on NAME read it (data.reader=auto), and
    data.reader=decode still decodes the original files.
    """
    from engine.catalog import load_catalog, set_pack
    from engine.data.pack import pack_entry
    from engine.sources import cache_root

    entries = load_catalog()
    if name not in entries:
        raise LrfrError(f"dataset {name!r} is not registered (see `lrfr data list`)")
    entry = entries[name]
    if size < 16:
        raise LrfrError(f"--size {size} is too small (at least 16 px)")
    target = out_dir if out_dir is not None else cache_root() / "packs" / f"{name}-{size}px"
    with _progress_bar() as bar:
        task = bar.add_task(f"packing {name}", total=None)
        pack = pack_entry(name, entry.path, entry.format, target, size=size, num_workers=max(0, workers),
                          skip_unreadable=skip_unreadable,
                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    set_pack(name, pack.root)
    skipped = pack.manifest["skipped"]
    if as_json:
        print(json.dumps({"name": name, "pack": str(pack.root), "count": pack.count, "size": pack.size,
                          "skipped": skipped, "sha256": pack.manifest["sha256"]}, indent=2))
    else:
        out.print(f"{name}: {pack.count} faces of {pack.size} px packed in {pack.root} "
                  f"({pack.count * 3 * pack.size ** 2 / 2 ** 30:.2f} GiB); training on {name} now reads it",
                  markup=False, highlight=False)
    for line in skipped[:MAX_LISTED]:
        err.print(f"  left out (unreadable): {line}", markup=False, highlight=False)
    if len(skipped) > MAX_LISTED:
        err.print(f"  ... {len(skipped) - MAX_LISTED} more, listed in {pack.root / 'pack.json'}", markup=False)


def data_align(src: Path, dst: Path,
               device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
               batch_size: Annotated[int, typer.Option(help="images detected per batch")] = 32,
               keep_unaligned: Annotated[bool, typer.Option(
                   "--keep-unaligned", help="write images without a detected face as centre crops "
                                            "(counted apart) instead of leaving them out")] = False,
               workers: Annotated[int, typer.Option(help="image reading threads")] = 2,
               as_json: JsonOpt = False) -> None:
    """Align the faces under SRC to the arcface 112x112 five-point template with MTCNN, into DST.

    DST gets SRC's folder layout. Images without a face are listed (DST/align_report.json) and left out,
    or centre-cropped with --keep-unaligned. Needs facenet-pytorch (the command says how to install it).
    """
    import torch

    from engine.data.align import REPORT, align_folder

    if batch_size < 1:
        raise LrfrError(f"--batch-size {batch_size} must be >= 1")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise LrfrError(f"--device {device}: CUDA is not available on this machine (use auto or cpu)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise LrfrError(f"the output folder {dst} is not empty: give a new folder (or remove it first)")
    with _progress_bar() as bar:
        task = bar.add_task(f"aligning on {device}", total=None)
        report = align_folder(src, dst, device=device, batch_size=batch_size, keep_unaligned=keep_unaligned,
                              workers=workers, progress=lambda done, total: bar.update(task, completed=done,
                                                                                        total=total))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        out.print(f"{report.aligned} of {report.images} images aligned into {dst}; "
                  f"{len(report.no_face)} without a face"
                  + (" (written as centre crops)" if keep_unaligned else " (left out)")
                  + (f"; {len(report.unreadable)} unreadable" if report.unreadable else ""),
                  markup=False, highlight=False)
    missing = report.no_face + report.unreadable
    for line in report.no_face[:MAX_LISTED]:
        err.print(f"  no face: {line}", markup=False, highlight=False)
    for line in report.unreadable[:MAX_LISTED]:
        err.print(f"  unreadable: {line}", markup=False, highlight=False)
    if missing:
        err.print(f"  every one is listed in {Path(report.output) / REPORT}"
                  + ("" if keep_unaligned or not report.no_face else "; --keep-unaligned writes centre crops"),
                  markup=False, highlight=False)
    if report.aligned == 0:
        raise typer.Exit(1)


def register(data_app: typer.Typer) -> None:
    data_app.command("pack")(data_pack)
    data_app.command("align")(data_align)
