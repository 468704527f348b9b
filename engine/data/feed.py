"""What feeds the training step: one epoch's batches of a dataset, by the reader its type calls for.

* a ``FacePack``: ``PackLoader`` (one gather per batch from the memory map, pinned on CUDA; no decoding);
* ``EncodedFaces`` (``data.reader = "gpu_decode"``): workers read bytes, the device decodes each batch;
* any other dataset (folders, RecordIO): PIL decoding in DataLoader worker processes.

Each yields ``Batch(uint8 N x 3 x H x W, int64 labels, skipped)`` for the index batches of one sampler, so
the data order is the sampler's whatever the reader. No reader draws from torch's global random stream (a
DataLoader would, for its workers' seeds, at every epoch): the model's random stream (dropout) is the
same whichever reader feeds it, so a pack trains exactly like the folder it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from engine.data.folder import Batch, collate_skip
from engine.data.gpu_decode import EncodedFaces, collate_encoded, decoded_batches
from engine.data.loader import ignore_stop_signals, iterate
from engine.data.pack import FacePack, PackLoader
from engine.errors import ConfigError


def epoch_batches(dataset: Dataset, batch_sampler: Iterable[list[int]], num_workers: int,
                  device: torch.device) -> Iterator[Batch]:
    """The batches of ``batch_sampler``, read the way ``dataset``'s type calls for (module docstring)."""
    cuda = device.type == "cuda"
    if isinstance(dataset, FacePack):
        return iter(PackLoader(dataset, batch_sampler, workers=max(1, num_workers), pin_memory=cuda))
    if isinstance(dataset, EncodedFaces):
        if not cuda:
            raise ConfigError(f"data.reader='gpu_decode' decodes JPEGs on a CUDA device, but this run trains on "
                              f"{device}: use data.reader=auto (or decode)")
        loader = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                            collate_fn=collate_encoded, persistent_workers=False, worker_init_fn=ignore_stop_signals,
                            generator=_own_stream())
        return decoded_batches(iterate(loader), dataset.size, device, dataset.on_error)
    loader = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_skip,
                        pin_memory=cuda, persistent_workers=False, worker_init_fn=ignore_stop_signals,
                        generator=_own_stream())
    return iterate(loader)


def _own_stream() -> torch.Generator:
    """The DataLoader's own generator (its workers' seeds; workers only decode, so any fixed seed will do)."""
    return torch.Generator().manual_seed(0)
