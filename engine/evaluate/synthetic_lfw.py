"""A synthetic LFW stand-in: identity-disjoint pairs of generated faces in LFW's fold layout.

Evaluation identities start at ``EVAL_IDENTITY_OFFSET`` so they never overlap the training
identities of the synthetic training set. Like LFW's pairs.txt, each of the 10 folds holds its
own identities and lists its matched pairs, then its mismatched pairs: contiguous 10-fold
evaluation then sees both kinds in every fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data.synthetic import render_face

EVAL_IDENTITY_OFFSET = 1_000_000
IMAGES_PER_IDENTITY = 6
FOLDS = 10


@dataclass
class PairSet:
    images: torch.Tensor  # uint8 M x 3 x S x S, every face the pairs use
    first: np.ndarray  # index into images of each pair's first face
    second: np.ndarray
    issame: np.ndarray


def make_pairs(num_identities: int, num_pairs: int, seed: int, size: int = 112) -> PairSet:
    if num_identities < 2 * FOLDS:
        raise ValueError(f"need at least {2 * FOLDS} identities for {FOLDS} identity-disjoint folds")
    rng = np.random.default_rng([seed, 424242])
    per_fold = num_pairs // FOLDS
    n_pos = per_fold // 2
    groups = np.array_split(np.arange(num_identities), FOLDS)
    faces: dict[tuple[int, int], int] = {}

    def face(identity: int, sample: int) -> int:
        return faces.setdefault((identity, sample), len(faces))

    first, second, same = [], [], []
    for group in groups:
        for _ in range(n_pos):
            ident = int(rng.choice(group))
            a, b = rng.choice(IMAGES_PER_IDENTITY, size=2, replace=False)
            first.append(face(ident, int(a)))
            second.append(face(ident, int(b)))
            same.append(True)
        for _ in range(per_fold - n_pos):
            ia, ib = rng.choice(group, size=2, replace=False)
            first.append(face(int(ia), int(rng.integers(IMAGES_PER_IDENTITY))))
            second.append(face(int(ib), int(rng.integers(IMAGES_PER_IDENTITY))))
            same.append(False)
    images = np.empty((len(faces), size, size, 3), dtype=np.uint8)
    for (ident, sample), index in faces.items():
        images[index] = render_face(seed, EVAL_IDENTITY_OFFSET + ident, sample, size=size)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return PairSet(tensor, np.array(first), np.array(second), np.array(same))
