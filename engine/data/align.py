"""Face alignment for ``lrfr data align``: MTCNN's five landmarks, warped onto the arcface 112 x 112 template.

The detector is MTCNN as packaged by ``facenet-pytorch`` (P-, R- and O-Net with the weights its wheel ships;
nothing is downloaded). It is an optional dependency whose release pins an old torch, so it is installed
without its dependency pins (``INSTALL_HINT``); it runs with this project's torch.

The template is insightface's ``arcface_dst`` (``python-package/insightface/utils/face_align.py``): left eye
(38.2946, 51.6963), right eye (73.5318, 51.5014), nose tip (56.0252, 71.7366), mouth corners (41.5493,
92.3655) and (70.7299, 92.2041), in pixel coordinates of a 112 x 112 crop whose pixel centres are integers
(OpenCV's convention, which insightface's ``norm_crop`` uses). As there, the transform is the least-squares
similarity (rotation, uniform scale, translation) from the five detected points to the template, and the
warp is bilinear with black outside the image. Detection and warping run in batches on the chosen device.

Images in which MTCNN finds no face are never dropped silently: they are counted and listed in the report
(``align_report.json`` in the output), and ``keep_unaligned`` writes them as centre crops, counted apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.data.atomic import build_atomically
from engine.data.folder import IMAGE_EXTENSIONS
from engine.errors import DatasetError, LrfrError

log = logging.getLogger(__name__)

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
TEMPLATE_SIZE = 112
INSTALL_HINT = "pip install requests tqdm && pip install --no-deps facenet-pytorch"
REPORT = "align_report.json"
JPEG_QUALITY = 95


class AlignerUnavailable(LrfrError):
    """MTCNN (facenet-pytorch) is not installed."""


def load_mtcnn(device: torch.device | str = "cpu"):
    """facenet-pytorch's MTCNN on ``device``, with the weights inside its wheel; ``AlignerUnavailable`` if absent."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise AlignerUnavailable(f"face alignment needs MTCNN from facenet-pytorch, which is not importable "
                                 f"({exc}); install it with: {INSTALL_HINT}") from None
    return MTCNN(device=torch.device(device), keep_all=True, select_largest=True, post_process=False)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity ``[[a, -b, tx], [b, a, ty]]`` minimising ``sum |M [src, 1] - dst|^2`` (no reflection).

    Linear in (a, b, tx, ty): one least-squares solve of the ``2K x 4`` system.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    system = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(system, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def warp_batch(images: torch.Tensor, matrices: np.ndarray, size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """Warp uint8 ``N x 3 x H x W`` by the 2 x 3 maps (source -> output pixel coordinates, integer pixel
    centres): bilinear, zeros outside; uint8 ``N x 3 x size x size`` on the images' device."""
    n, _, h, w = images.shape
    full = np.concatenate([matrices, np.tile([[[0.0, 0.0, 1.0]]], (len(matrices), 1, 1))], axis=1)
    inverse = np.linalg.inv(full)  # output pixel -> source pixel
    # grid_sample (align_corners=False) reads normalised coordinates: pixel centre i <-> (2 i + 1) / W - 1.
    to_norm = np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])
    from_norm = np.array([[size / 2.0, 0.0, (size - 1) / 2.0], [0.0, size / 2.0, (size - 1) / 2.0], [0.0, 0.0, 1.0]])
    theta = to_norm @ inverse @ from_norm
    theta = torch.as_tensor(theta[:, :2, :], dtype=torch.float32, device=images.device)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def centre_crop(image: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The largest centred square of an ``H x W x 3`` image, resized to ``size`` (antialiased bicubic)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))


@dataclass
class AlignReport:
    source: str
    output: str
    device: str
    images: int = 0
    aligned: int = 0
    centre_cropped: int = 0  # no face found, written as a centre crop (keep_unaligned)
    no_face: list[str] = field(default_factory=list)  # relative paths, every one of them
    unreadable: list[str] = field(default_factory=list)  # "path: reason"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Face:
    rel: Path
    pixels: np.ndarray | None  # H x W x 3 uint8, None when unreadable
    error: str = ""


def list_images(src: Path) -> list[Path]:
    """Every image under ``src`` (any depth, hidden entries skipped), relative to it, sorted."""
    found = [p.relative_to(src) for p in src.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    return sorted(found)


def output_name(rel: Path) -> Path:
    """JPEG and PNG keep their name and format; other formats (PGM, BMP, WebP ...) become PNG."""
    return rel if rel.suffix.lower() in (".jpg", ".jpeg", ".png") else rel.with_suffix(".png")


def _read(src: Path, rel: Path) -> _Face:
    try:
        with Image.open(src / rel) as im:
            return _Face(rel, np.asarray(im.convert("RGB")))
    except Exception as exc:  # PIL raises many types for broken files
        return _Face(rel, None, f"{type(exc).__name__}: {exc}")


def _read_ahead(src: Path, rels: list[Path], chunk: int, workers: int) -> Iterator[list[_Face]]:
    """Chunks of decoded images, the next chunk decoding in threads while the current one is detected."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        chunks = [rels[i:i + chunk] for i in range(0, len(rels), chunk)]
        pending = [pool.submit(lambda c: [_read(src, r) for r in c], c) for c in chunks[:2]]
        for k in range(len(chunks)):
            faces = pending.pop(0).result()
            if k + 2 < len(chunks):
                pending.append(pool.submit(lambda c: [_read(src, r) for r in c], chunks[k + 2]))
            yield faces


def detect_landmarks(mtcnn, images: list[np.ndarray]) -> list[np.ndarray | None]:
    """Five landmarks (5 x 2, x/y pixels) of the largest face in each same-sized image, None where none."""
    _, _, points = mtcnn.detect(np.stack(images), landmarks=True)
    return [None if p is None or len(p) == 0 else np.asarray(p[0], dtype=np.float64) for p in points]


def _align_group(mtcnn, faces: list[_Face], device: torch.device) -> list[np.ndarray | None]:
    """Aligned 112 x 112 x 3 crops of same-sized faces (None where no face was found)."""
    landmarks = detect_landmarks(mtcnn, [f.pixels for f in faces])
    found = [i for i, lm in enumerate(landmarks) if lm is not None]
    out: list[np.ndarray | None] = [None] * len(faces)
    if found:
        batch = torch.from_numpy(np.stack([faces[i].pixels for i in found])).permute(0, 3, 1, 2).to(device)
        matrices = np.stack([similarity_transform(landmarks[i], ARCFACE_TEMPLATE) for i in found])
        warped = warp_batch(batch, matrices).permute(0, 2, 3, 1).cpu().numpy()
        for k, i in enumerate(found):
            out[i] = warped[k]
    return out


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(image).save(path, kind, **({"quality": JPEG_QUALITY} if kind == "JPEG" else {}))


def align_folder(src: Path | str, dst: Path | str, device: torch.device | str = "cpu", batch_size: int = 32,
                 keep_unaligned: bool = False, workers: int = 2,
                 progress: Callable[[int, int], None] | None = None) -> AlignReport:
    """Align every image under ``src`` into ``dst`` (same relative layout), written atomically; the report."""
    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder of images")
    if dst == src or src in dst.parents:
        raise DatasetError(f"the output {dst} must not be inside the source {src}")
    rels = list_images(src)
    if not rels:
        raise DatasetError(f"no images under {src} (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    names = [output_name(r) for r in rels]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"two source images would both be written as {dup}: rename one of them")
    device = torch.device(device)
    mtcnn = load_mtcnn(device)
    report = AlignReport(str(src), str(dst), str(device), images=len(rels))

    def build(tmp: Path) -> None:
        done = 0
        for faces in _read_ahead(src, rels, batch_size, workers):
            readable = [f for f in faces if f.pixels is not None]
            report.unreadable += [f"{f.rel}: {f.error}" for f in faces if f.pixels is None]
            by_size: dict[tuple[int, ...], list[_Face]] = {}
            for face in readable:
                by_size.setdefault(face.pixels.shape, []).append(face)
            for group in by_size.values():
                for face, aligned in zip(group, _align_group(mtcnn, group, device), strict=True):
                    _write_one(tmp, face, aligned, keep_unaligned, report)
            done += len(faces)
            if progress is not None:
                progress(done, len(rels))
        report.no_face.sort()
        (tmp / REPORT).write_text(json.dumps(report.as_dict(), indent=1))

    build_atomically(dst, build, "the aligned faces")
    return report


def _write_one(tmp: Path, face: _Face, aligned: np.ndarray | None, keep_unaligned: bool, report: AlignReport) -> None:
    if aligned is not None:
        report.aligned += 1
        _save(aligned, tmp / output_name(face.rel))
        return
    report.no_face.append(str(face.rel))
    if keep_unaligned:
        report.centre_cropped += 1
        _save(centre_crop(face.pixels), tmp / output_name(face.rel))
