"""The Siamese training loop of the paper (ARCHITECTURE.md, "The method the engine implements").

Per batch of HR faces: an LR copy is made on the training device (MAug), both copies go through
the same backbone in two forward passes (BatchNorm statistics stay per domain), and

    L = lambda * L_dist(f_hr/|f_hr|, f_lr/|f_lr|) + CE(f_hr)/2 + CE(f_lr)/2.

With no LR resolutions configured (the baseline) there is one forward pass and L = CE(f_hr).

Data loaders only decode uint8 images; flips, degradation and normalisation run batched on the
device. Checkpoints hold everything needed for an exact resume (weights, optimiser, AMP scaler,
RNG states, the position inside the epoch); the data order is a pure function of (seed, epoch).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from engine import checkpoint as ckpt
from engine.augment import ResolutionSampler, degrade, make_pair, random_hflip
from engine.config import RunConfig, to_dict
from engine.data.feed import epoch_batches
from engine.data.loader import STOP_SIGNALS
from engine.errors import ConfigError, TrainingDiverged
from engine.losses import build_distance_loss, build_head
from engine.memory import release_free_memory
from engine.models import get_model
from engine.reporting import Reporter
from engine.schedule import lr_at
from engine.sources import build_train_dataset
from engine.speed import DeviceMetrics, build_sgd, compile_module, native_cpu_bf16
from engine.threads import resolve_threads, torch_threads

# A worker that stopped on SIGTERM/SIGINT after writing its checkpoint exits with this code, so a
# launcher can tell "killed cleanly, resumable" from a crash (1) or a divergence (2).
EXIT_INTERRUPTED = 3


class TrainingInterrupted(Exception):
    """Training stopped on request after saving a checkpoint at ``step``."""

    def __init__(self, step: int, checkpoint: Path, reason: str) -> None:
        super().__init__(f"training interrupted ({reason}) at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
        self.reason = reason


@dataclass
class TrainResult:
    backbone: nn.Module
    step: int
    total_steps: int
    checkpoint: Path
    wall_s: float
    device: torch.device


# ---------------------------------------------------------------- environment


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Read torchrun's environment; a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def select_device(name: str, env: DistEnv) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{env.local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` (None: full precision).

    ``auto``: bf16 (no loss scaling needed) on CUDA and on a CPU that computes bf16 in hardware
    (``engine.speed.native_cpu_bf16``: a third less time and memory per step there); full precision on
    any other CPU, where bf16 would be emulated.
    """
    if setting == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and native_cpu_bf16())
        return torch.bfloat16 if native else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]


# ---------------------------------------------------------------- data order


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices for one epoch: a permutation seeded by (seed, epoch), sharded by rank.

    ``skip`` drops the first batches (already trained before an interruption) without decoding them.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, env: DistEnv, skip: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.epoch, self.env, self.skip = n, batch_size, seed, epoch, env, skip

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.env.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        global_batch = self.batch_size * self.env.world_size
        for b in range(self.skip, self.batches_per_epoch()):
            chunk = order[b * global_batch : (b + 1) * global_batch]
            yield chunk[self.env.rank :: self.env.world_size]

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.skip


# ---------------------------------------------------------------- the model being trained


class SiameseModule(nn.Module):
    """Backbone + classification head + distance loss, as one module so DDP sees one forward.

    Both forward passes happen inside ``forward``: DDP requires exactly one forward per backward.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, distance, lam: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.distance = distance
        self.lam = lam

    def forward(self, x_hr: Tensor, x_lr: Tensor | None, labels: Tensor) -> tuple[Tensor, Tensor]:
        f_hr = self.backbone(x_hr)
        if x_lr is None:
            return self.head(f_hr, labels), torch.zeros((), device=x_hr.device)
        f_lr = self.backbone(x_lr)
        loss_cls = 0.5 * self.head(f_hr, labels) + 0.5 * self.head(f_lr, labels)
        if self.distance is None:
            return loss_cls, torch.zeros((), device=x_hr.device)
        f_hr_n = F.normalize(f_hr.float(), dim=1)
        f_lr_n = F.normalize(f_lr.float(), dim=1)
        return loss_cls, self.lam * self.distance(f_hr_n, f_lr_n)


def augment_batch(images: Tensor, sampler: ResolutionSampler | None, flip: bool,
                  generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """HR view and (unless the baseline) the LR view of a uint8 batch, on the batch's device."""
    if sampler is None:
        return (random_hflip(images, generator) if flip else images), None
    if flip:
        # make_pair flips the HR and LR copies independently, as the released code does.
        hr, lr, _ = make_pair(images, sampler, generator)
        return hr, lr
    return images, degrade(images, sampler.sample(len(images), generator))


def to_model_input(images: Tensor, channels_last: bool) -> Tensor:
    """uint8 0..255 -> float in [-1, 1] (the insightface normalisation)."""
    x = images.float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def build_backbone(cfg: RunConfig) -> nn.Module:
    m = cfg.model
    return get_model(m.name, embedding_size=m.embedding_size, width=m.width, dropout=m.dropout,
                     input_size=m.input_size)


# ---------------------------------------------------------------- stop requests


class StopFlag:
    """Set by SIGTERM/SIGINT (or by a caller): the loop checkpoints and raises TrainingInterrupted."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.requests: list[str] = []  # every reason given, in order (a kill and a time limit may both come)

    def request(self, reason: str) -> None:
        self.reason = reason
        self.requests.append(reason)
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


@contextmanager
def stop_on_signals(flag: StopFlag):
    """Route SIGTERM, SIGINT and SIGUSR1 (``STOP_SIGNALS``) to ``flag`` while training (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, _frame):
        flag.request(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------- the loop


def train(cfg: RunConfig, run_dir: Path, reporter: Reporter | None = None, resume: bool = True,
          stop: StopFlag | None = None, dataset: Dataset | None = None,
          init_backbone: dict[str, Tensor] | None = None, single_process: bool = False,
          run_uuid: str | None = None) -> TrainResult:
    """Train per ``cfg``; checkpoints go to ``run_dir``. Resumes from ``run_dir/checkpoint.pt``.

    ``run_uuid`` is the identity of the run (the experiment manager's): checkpoints carry it, and a
    resume takes only a checkpoint of the same run and training config (``CheckpointMismatch``).

    ``dataset`` replaces the one ``cfg.data`` names (benchmark fine-tuning trains on a split of
    the benchmark); ``init_backbone`` starts from trained weights instead of a fresh init;
    ``single_process`` ignores torchrun's environment (fine-tuning inside rank 0's evaluation).

    torch runs with ``train.threads`` intra-op threads meanwhile (0: the cores the loader workers leave;
    ``engine.threads``), and with the caller's count again afterwards. The heap space the training freed is
    given back to the system when it returns (``engine.memory``).
    """
    try:
        with torch_threads(resolve_threads(cfg.train.threads, cfg.data.num_workers,
                                           processes=1 if single_process else None)):
            return _train(cfg, Path(run_dir), reporter, resume, stop, dataset, init_backbone, single_process,
                          run_uuid)
    finally:
        release_free_memory()  # the activations' heap space, held otherwise through the evaluation


def _train(cfg: RunConfig, run_dir: Path, reporter: Reporter | None, resume: bool, stop: StopFlag | None,
           dataset: Dataset | None, init_backbone: dict[str, Tensor] | None, single_process: bool,
           run_uuid: str | None) -> TrainResult:
    """``train``'s body, in its thread count."""
    reporter = reporter if reporter is not None else Reporter()
    stop = stop if stop is not None else StopFlag()
    env = DistEnv() if single_process else dist_env()
    device = select_device(cfg.train.device, env)
    if env.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    t_start = time.perf_counter()

    # The steps below run in this order on purpose: the global RNG seeded first draws the model's initial
    # weights, and a resume then replaces weights and RNG states before anything else consumes them.
    run = _Training(cfg, Path(run_dir), reporter, env, device, dataset, init_backbone, run_uuid)
    if env.is_main:
        ckpt.remove_stale_temps(run.last)
    if resume and run.last.exists():
        run.resume()
    run.wrap_for_ddp()

    if env.is_main:
        reporter.start(run.total_steps, run.step)
    run.module.train()
    window = _Window(device)
    with stop_on_signals(stop):
        run.run_epochs(window, stop)
    final = run.save("final")
    run.module.eval()
    return TrainResult(run.module.backbone, run.step, run.total_steps, final, time.perf_counter() - t_start, device)


class _Training:
    """One ``train`` call's state: the data and its step counts, the model, optimiser, AMP scaler and RNG
    streams, and ``step``, the number of optimiser steps taken (what a checkpoint resumes from)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, reporter: Reporter, env: DistEnv, device: torch.device,
                 dataset: Dataset | None, init_backbone: dict[str, Tensor] | None, run_uuid: str | None) -> None:
        self.cfg, self.reporter, self.env, self.device, self.run_uuid = cfg, reporter, env, device, run_uuid
        self.last = run_dir / ckpt.LAST
        self.step = 0
        torch.manual_seed(cfg.train.seed + env.rank)
        self._setup_data(dataset)
        self._setup_model(init_backbone)
        self._setup_optimiser()
        self._setup_augmentation()
        self.device_metrics = DeviceMetrics(device)

    def _setup_data(self, dataset: Dataset | None) -> None:
        cfg, env = self.cfg, self.env
        if dataset is None:
            dataset = build_train_dataset(cfg, self.reporter if env.is_main else None)
            release_free_memory()  # what generating or indexing the faces freed, before the first step
        self.dataset = dataset
        self.num_classes = dataset.num_classes
        if cfg.optim.batch_size % env.world_size:
            raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by {env.world_size} "
                              f"processes")
        self.per_rank_batch = cfg.optim.batch_size // env.world_size
        self.steps_per_epoch = len(dataset) // cfg.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"dataset has {len(dataset)} images, fewer than one batch of {cfg.optim.batch_size}")
        self.total_steps = self.steps_per_epoch * cfg.schedule.epochs
        if cfg.schedule.max_steps:
            self.total_steps = min(self.total_steps, cfg.schedule.max_steps)

    def _setup_model(self, init_backbone: dict[str, Tensor] | None) -> None:
        cfg = self.cfg
        backbone = build_backbone(cfg)
        if init_backbone is not None:
            backbone.load_state_dict(init_backbone)
        head = build_head(cfg.loss.head, cfg.model.embedding_size, self.num_classes, s=cfg.loss.s, m=cfg.loss.m)
        siamese_lr = bool(cfg.augment.resolutions)
        distance = (build_distance_loss(cfg.loss.distance, p=cfg.loss.p, reduction=cfg.loss.reduction,
                                        beta=cfg.loss.beta)
                    if siamese_lr else None)
        self.module = SiameseModule(backbone, head, distance, cfg.loss.lambda_).to(self.device)
        # Channels-last helps on the CPU too (oneDNN convolutions): measured 1.5x per step at 112 px.
        self.channels_last = cfg.train.channels_last
        if self.channels_last:
            self.module.backbone.to(memory_format=torch.channels_last)
        # What the forward pass runs: the module itself, or its DDP wrapper (wrap_for_ddp), compiled or not.
        self.ddp_module: nn.Module = self.module

    def _setup_optimiser(self) -> None:
        cfg, device = self.cfg, self.device
        self.optimizer = build_sgd(self.module.parameters(), cfg.optim, device)
        autocast_dtype = amp_dtype(cfg.train.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype is torch.float16)
        # Said once per training, because train.amp=auto differs between machines (engine.speed).
        precision = str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "float32"
        if self.env.is_main:
            self.reporter.event("precision", f"training in {precision} on {device.type}", dtype=precision,
                                setting=cfg.train.amp)
        self.autocast = ((lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype
                         else nullcontext)

    def _setup_augmentation(self) -> None:
        cfg = self.cfg
        # The LR copies' own stream per rank (a checkpoint saves it): flips and resolutions do not depend on
        # how much the model consumed of the global RNG.
        self.aug_gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + 17 + self.env.rank)
        self.sampler = (ResolutionSampler(tuple(cfg.augment.resolutions), tuple(cfg.augment.weights))
                        if cfg.augment.resolutions else None)

    def resume(self) -> None:
        """Weights, optimiser, scaler, RNG streams and step from ``checkpoint.pt`` (of this run only)."""
        last, env = self.last, self.env
        state = ckpt.load(last)
        ckpt.check_belongs(state, last, self.run_uuid, to_dict(self.cfg))
        try:
            self.module.backbone.load_state_dict(state["backbone"])
            self.module.head.load_state_dict(state["head"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            # A resume with a different number of processes falls back to rank 0's streams.
            saved_rank = env.rank if env.rank < len(state["aug_rng"]) else 0
            self.aug_gen.set_state(state["aug_rng"][saved_rank])
            torch.set_rng_state(state["torch_rng"][saved_rank])
            self.step = int(state["step"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ckpt.CheckpointMismatch(f"{last} does not fit this run's model: {exc}") from None
        if env.is_main:
            self.reporter.event("resume", f"resumed from {last} at step {self.step}", step=self.step)

    def wrap_for_ddp(self) -> None:
        """Under torchrun, the forward pass goes through DDP. Called after ``resume``, as before this split:
        DDP's constructor broadcasts rank 0's parameters and buffers to the other ranks."""
        if self.env.world_size > 1:
            device = self.device
            self.ddp_module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None)
        if self.cfg.train.compile:
            self.ddp_module = compile_module(self.ddp_module)

    def save(self, reason: str) -> Path:
        """Write ``checkpoint.pt`` (rank 0; every rank must call it, for the RNG states' all-gather)."""
        env = self.env
        rng_states = [(self.aug_gen.get_state(), torch.get_rng_state())]
        if env.world_size > 1:
            gathered: list = [None] * env.world_size
            dist.all_gather_object(gathered, rng_states[0])
            rng_states = gathered
        if not env.is_main:
            return self.last
        state = {
            "backbone": self.module.backbone.state_dict(),
            "head": self.module.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            # Per rank: (augmentation generator state, torch global RNG state used by dropout).
            "aug_rng": [a for a, _ in rng_states],
            "torch_rng": [t for _, t in rng_states],
            "step": self.step,
            "total_steps": self.total_steps,
            "num_classes": self.num_classes,
            "config": to_dict(self.cfg),
            "run_uuid": self.run_uuid,
        }
        ckpt.save_atomic(state, self.last)
        self.reporter.event("checkpoint", f"checkpoint at step {self.step} ({reason})", step=self.step,
                            path=str(self.last))
        self.reporter.artifact("checkpoint", self.last)
        return self.last

    def optimisation_step(self, images: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor, int]:
        """One SGD step on a uint8 batch: (classification loss, distance loss, forward passes per image)."""
        cfg, device, optimizer, scaler = self.cfg, self.device, self.optimizer, self.scaler
        for group in optimizer.param_groups:
            group["lr"] = lr
        # A pack's batch arrives with channels-last strides: standard ones on the device (cheap there).
        images = images.to(device, non_blocking=True).contiguous()
        labels = labels.to(device, non_blocking=True)
        hr, lr_images = augment_batch(images, self.sampler, cfg.augment.flip, self.aug_gen)
        x_hr = to_model_input(hr, self.channels_last)
        x_lr = to_model_input(lr_images, self.channels_last) if lr_images is not None else None
        with self.autocast():
            loss_cls, loss_dist = self.ddp_module(x_hr, x_lr, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_cls + loss_dist).backward()
        if cfg.optim.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), cfg.optim.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return loss_cls.detach(), loss_dist.detach(), 2 if x_lr is not None else 1

    def epoch_batches(self) -> Iterator:
        """The rest of the current epoch: its seeded order, without the batches already trained on."""
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        batch_sampler = EpochBatchSampler(len(self.dataset), self.per_rank_batch, self.cfg.train.seed, epoch,
                                          self.env, skip=in_epoch)
        return epoch_batches(self.dataset, batch_sampler, self.cfg.data.num_workers, self.device)

    def run_epochs(self, window: _Window, stop: StopFlag) -> None:
        """Train until ``total_steps``: after each step, log, checkpoint and stop when due."""
        while self.step < self.total_steps:
            for images, labels, skipped in self.epoch_batches():
                if skipped and self.env.is_main:
                    self.reporter.event("skipped_images", f"{skipped} unreadable images skipped", count=skipped)
                lr = lr_at(self.step, self.steps_per_epoch, self.cfg.optim.lr, self.cfg.schedule)
                if len(images):  # in skip mode a batch can be all unreadable images: count the step only
                    loss_cls, loss_dist, branches = self.optimisation_step(images, labels, lr)
                    window.add(loss_cls, loss_dist, len(images) * self.env.world_size, branches)
                self.step += 1
                self.log(window, lr)
                self.checkpoint_if_due()
                self.stop_if_requested(stop)
                if self.step >= self.total_steps:
                    break

    def log(self, window: _Window, lr: float) -> None:
        """Every ``log_every`` steps and at the end: the window's mean losses and throughput (rank 0 reports
        them); a non-finite mean loss ends the run with ``TrainingDiverged``."""
        step = self.step
        if not ((step % self.cfg.train.log_every == 0 or step == self.total_steps) and window.steps):
            return
        values = window.flush()
        if not math.isfinite(values["loss"]):
            raise TrainingDiverged(f"loss became {values['loss']} at step {step}; "
                                   f"last good checkpoint: {self.last if self.last.exists() else 'none'}")
        if self.env.is_main:
            values["lr"] = lr
            values["epoch"] = step / self.steps_per_epoch
            values.update(self.device_metrics.read())
            self.reporter.metrics(step, values)

    def checkpoint_if_due(self) -> None:
        """At the end of every ``checkpoint_every_epochs``-th epoch."""
        epoch_done = self.step % self.steps_per_epoch == 0
        if epoch_done and (self.step // self.steps_per_epoch) % self.cfg.train.checkpoint_every_epochs == 0:
            self.save(f"epoch {self.step // self.steps_per_epoch}")

    def stop_if_requested(self, stop: StopFlag) -> None:
        """A stop request (SIGTERM/SIGINT or the caller): checkpoint, then raise ``TrainingInterrupted``."""
        # Under DDP the ranks agree on a stop only at log steps: one small all-reduce there
        # instead of a host sync every step (a SIGTERM then waits at most log_every steps).
        env = self.env
        if (env.world_size == 1 or self.step % self.cfg.train.log_every == 0) and _stop_requested(stop, env,
                                                                                                 self.device):
            path = self.save(f"stop: {stop.reason or 'requested'}")
            raise TrainingInterrupted(self.step, path, stop.reason or "requested")


def _stop_requested(stop: StopFlag, env: DistEnv, device: torch.device) -> bool:
    """All ranks must agree to stop at the same step, or DDP would hang in the next all-reduce."""
    if env.world_size == 1:
        return bool(stop)
    flag = torch.tensor([1 if stop else 0], device=device)  # NCCL reduces CUDA tensors only
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and not stop.reason:
        stop.reason = "stop on another rank"
    return bool(flag.item())


class _Window:
    """Accumulates step losses on the device; syncs with the host only at log steps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.cls = torch.zeros((), device=self.device)
        self.dist = torch.zeros((), device=self.device)
        self.steps = 0
        self.samples = 0
        self.images = 0
        self.t0 = time.perf_counter()

    def add(self, loss_cls: Tensor, loss_dist: Tensor, samples: int, branches: int) -> None:
        self.cls += loss_cls.float()
        self.dist += loss_dist.float()
        self.steps += 1
        self.samples += samples
        self.images += samples * branches

    def flush(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        cls = self.cls.item() / self.steps
        dst = self.dist.item() / self.steps
        out = {"loss": cls + dst, "loss_cls": cls, "loss_dist": dst,
               "samples_per_s": self.samples / elapsed, "images_per_s": self.images / elapsed}
        self._reset()
        return out


def load_backbone(checkpoint_path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, RunConfig]:
    """The trained backbone of a checkpoint, in eval mode, with the config it was trained with."""
    from engine.config import from_dict

    state = ckpt.load(Path(checkpoint_path))
    cfg = from_dict(state["config"])
    backbone = build_backbone(cfg)
    try:
        backbone.load_state_dict(state["backbone"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ckpt.CheckpointMismatch(f"{checkpoint_path}: its weights do not fit its config's model: "
                                      f"{str(exc).splitlines()[0]}") from None
    return backbone.to(device).eval(), cfg


__all__ = ["EXIT_INTERRUPTED", "TrainResult", "TrainingInterrupted", "StopFlag", "train", "load_backbone"]
