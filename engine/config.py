"""The typed run config: sections as dataclasses, presets as TOML files, overrides as ``key=value``.

A config is resolved once (preset, then its ``extends`` chain, then the user's overrides) and
validated before anything is queued. Every key a user can set is a dataclass field here, so
``lrfr config --preset NAME`` shows all of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from engine.errors import ConfigError
from engine.evaluate.registry import LOWRES_MODES, SCFACE_PROTOCOLS, parse_benchmark

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class ModelConfig:
    name: str = "iresnet34"
    width: float = 1.0
    embedding_size: int = 512
    dropout: float = 0.0
    input_size: int = 112


@dataclass
class DataConfig:
    # "synthetic" uses the built-in face generator; any other name is looked up in the catalog.
    dataset: str = "synthetic"
    synthetic_identities: int = 300
    synthetic_images_per_identity: int = 12
    synthetic_seed: int = 0
    num_workers: int = 2
    # "raise" stops at the first unreadable image (naming it); "skip" drops and counts them.
    on_error: str = "raise"


@dataclass
class AugmentConfig:
    # Resolutions (px) of the LR copy and their sampling weights. Empty = no LR branch (baseline).
    resolutions: list[int] = field(default_factory=lambda: [7, 14, 20])
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 2.0])
    flip: bool = True


@dataclass
class LossConfig:
    head: str = "cosface"
    s: float = 48.0
    m: float = 0.4
    distance: str = "logexp"
    p: float = 1.0
    # "sample": the paper's per-sample Eq. 3; "batch": the released code's single log over the batch.
    reduction: str = "sample"
    # Threshold of distance = "smoothl1" (torch's smooth_l1_loss beta), > 0. Not torch's default 1: on
    # unit-normalised embeddings every coordinate difference is far below 1 (rms <= 2/sqrt(512) ~ 0.09
    # for 512-d), so beta = 1 is exactly the L2 loss. 0.02 is the rms coordinate difference of a pair
    # with cosine 0.9: aligned pairs stay quadratic, worse ones get L1 gradients (engine.losses.SMOOTH_L1_BETA).
    beta: float = 0.02
    # Written ``loss.lambda`` in presets and overrides (``lambda`` is a Python keyword).
    lambda_: float = 1.0


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    # Clip the global gradient norm to this value; 0 disables clipping.
    clip_grad_norm: float = 0.0


@dataclass
class ScheduleConfig:
    epochs: int = 28
    milestones: list[int] = field(default_factory=lambda: [16, 24])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    # Stop after this many optimiser steps in total (0 = run all epochs). For smoke runs and tests.
    max_steps: int = 0


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16
    channels_last: bool = True
    log_every: int = 20
    checkpoint_every_epochs: int = 1


@dataclass
class EvalConfig:
    # Any of: lfw, xqlfw, scface, tinyface, lowres_lfw (declared in `engine.evaluate.registry`), each on its own
    # catalog entry (lowres_lfw reads lfw), or BENCH=DATASET to run that protocol on another registered
    # dataset of a format it reads: "xqlfw=my_pairs" (results under the benchmark "xqlfw:my_pairs").
    benchmarks: list[str] = field(default_factory=lambda: ["lfw", "xqlfw", "scface"])
    # "catalog": the datasets registered under the benchmark's name (`lrfr data add lfw PATH`);
    # "synthetic": stand-ins generated in the real file formats (no download needed).
    source: str = "catalog"
    standin_size: str = "tiny"
    # lowres_lfw probe resolutions in px (a value >= the input size is the HR image) and which
    # images of a pair are degraded: "second" (cross-resolution), "both", or "random" (seeded sizes).
    resolutions: list[int] = field(default_factory=lambda: [7, 10, 14, 20, 28, 42, 56, 112])
    lowres_mode: str = "second"
    batch_size: int = 128
    seed: int = 0
    # SCface, any of: "zero_shot" = no fine-tuning, on the DCR split's test ids (80 of 130; the paper's
    # "w/o fine-tuning", Tables 1, 4, 6); "finetune" = fine-tune on the other scface_train_ids subjects,
    # test on the same ids (Table 1); "zero_shot_all130" = no fine-tuning on every subject (not in the paper).
    # The split is seeded (eval.seed) and saved as scface_split.json in the run directory.
    scface_protocols: list[str] = field(default_factory=lambda: ["zero_shot", "finetune"])
    scface_train_ids: int = 50
    # TinyFace: also fine-tune on its Training_Set before testing (the paper's Table 2 setting).
    tinyface_finetune: bool = False
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    finetune_batch_size: int = 64


@dataclass
class LaunchConfig:
    """How the experiment manager starts the run (ignored by a plain ``engine.train.train`` call)."""

    # GPUs the run asks for; 0 = CPU. More than 1 starts torchrun with one process per GPU (DDP).
    gpus: int = 1
    # "local": a process on this machine; "slurm": a Slurm job (through submitit).
    launcher: str = "local"
    slurm_partition: str = ""
    slurm_time_min: int = 0  # 0 = the partition's default limit
    slurm_cpus_per_task: int = 8
    slurm_mem_gb: int = 0  # 0 = the partition's default
    # Machines the run spans (DDP over nodes; `gpus` is per node). More than 1 needs launcher "slurm".
    nodes: int = 1
    # The worker reports through runs/<id>/journal.jsonl instead of opening runs.db: "auto" = for Slurm.
    journal: str = "auto"
    # Slurm: on the pre-timeout signal, checkpoint and requeue the job, which resumes as the same run.
    slurm_requeue: bool = False


@dataclass
class RunConfig:
    name: str = ""
    preset: str = ""
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


SECTIONS = ("model", "data", "augment", "loss", "optim", "schedule", "train", "eval", "launch")
TOP_LEVEL = ("name", "preset", "description")

# Allowed values of the string options that select behaviour.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.on_error": ("raise", "skip"),
    "loss.head": ("cosface", "arcface", "softmax"),
    "loss.distance": ("none", "l1", "l2", "smoothl1", "logexp"),
    "loss.reduction": ("sample", "batch"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
    "eval.source": ("catalog", "synthetic"),
    "eval.standin_size": ("tiny", "test"),
    "eval.lowres_mode": LOWRES_MODES,  # one protocol each (engine.evaluate.registry)
    "launch.launcher": ("local", "slurm"),
    "launch.journal": ("auto", "on", "off"),
}


def _key(field_name: str) -> str:
    """The user-facing name of a field (``lambda_`` -> ``lambda``)."""
    return field_name.rstrip("_")


def _section_fields(section: Any) -> dict[str, dataclasses.Field]:
    return {_key(f.name): f for f in fields(section)}


# ---------------------------------------------------------------- dict conversion


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Nested plain dict with user-facing key names (JSON/TOML friendly)."""
    out: dict[str, Any] = {k: getattr(cfg, k) for k in TOP_LEVEL}
    for name in SECTIONS:
        section = getattr(cfg, name)
        out[name] = {_key(f.name): _plain(getattr(section, f.name)) for f in fields(section)}
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def flatten(cfg: RunConfig) -> dict[str, Any]:
    """``{"optim.lr": 0.1, ...}``: one entry per overridable key."""
    nested = to_dict(cfg)
    flat = {k: nested[k] for k in TOP_LEVEL}
    for name in SECTIONS:
        for key, value in nested[name].items():
            flat[f"{name}.{key}"] = value
    return flat


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a config from a nested dict (as stored in runs.db or a checkpoint).

    The checks that depend on this machine (``validate(..., here=True)``) are left out: the config was
    checked where it was queued, and a checkpoint trained on a GPU must still load for analysis on a CPU.
    """
    cfg = RunConfig()
    _apply_nested(cfg, data, origin="config")
    validate(cfg, here=False)
    return cfg


# ---------------------------------------------------------------- setting values


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (a TOML value or an override string) to the field's type, or raise."""
    if get_origin(annotation) is list:
        (item_type,) = get_args(annotation)
        return [_coerce(key, item, item_type) for item in _list_items(key, value)]
    convert = _SCALARS.get(annotation)
    if convert is None:
        raise ConfigError(f"{key}: unsupported type {annotation!r}")  # pragma: no cover
    return convert(key, value)


def _list_items(key: str, value: Any) -> list[Any]:
    """The items of a list value: a TOML array, or an override string ``[a, b]`` / ``a,b`` (brackets optional)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            text = text[1:-1] if text.endswith("]") else text[1:]
        return [v for v in (s.strip() for s in text.split(",")) if v]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(f"{key}: expected a list, got {value!r}")


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return int(as_float)


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    # inf passes range checks such as "> 0" and nan fails them with a confusing message; both only
    # break once training runs. One rule here covers every float key (list items included).
    if not math.isfinite(number):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return number


def _to_str(key: str, value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return str(value)


# The field types a config key can have (besides list[...] of them), and how a value becomes one.
_SCALARS: dict[type, Callable[[str, Any], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def set_value(cfg: RunConfig, key: str, value: Any) -> None:
    """Set one dotted key, checking the key exists and the value has the right type."""
    if key in TOP_LEVEL:
        setattr(cfg, key, _coerce(key, value, str))
        return
    section_name, _, leaf = key.partition(".")
    if section_name not in SECTIONS:
        valid = ", ".join(TOP_LEVEL + SECTIONS)
        raise ConfigError(f"unknown config key {key!r}; top-level keys and sections are: {valid}")
    section = getattr(cfg, section_name)
    known = _section_fields(section)
    if leaf not in known:
        valid = ", ".join(f"{section_name}.{k}" for k in known)
        raise ConfigError(f"unknown config key {key!r}; valid keys in [{section_name}]: {valid}")
    f = known[leaf]
    hints = get_type_hints(type(section))
    setattr(section, f.name, _coerce(key, value, hints[f.name]))


def _apply_nested(cfg: RunConfig, data: dict[str, Any], origin: str) -> None:
    for key, value in data.items():
        if key == "extends":
            continue
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{key}] must be a table")
            for leaf, leaf_value in value.items():
                set_value(cfg, f"{key}.{leaf}", leaf_value)
        else:
            set_value(cfg, key, value)


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.05)")
    return key.strip(), value.strip()


# ---------------------------------------------------------------- validation


# train.device: auto, cpu, cuda or cuda:N (N a non-negative integer).
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
# Strings that end up in a Slurm batch script (as #SBATCH values): Slurm names, nothing a shell or
# sbatch could read as a new line, a comment or an expansion.
_SLURM_NAME_RE = re.compile(r"[A-Za-z0-9_.,+-]*")


def validate(cfg: RunConfig, *, here: bool = True) -> None:
    """Raise ConfigError naming the key for any value outside its allowed range.

    ``here``: also check what depends on this machine (a CUDA device for a run that is not sent to Slurm).
    """
    flat = flatten(cfg)
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{key}={flat[key]!r} is not valid; choose one of: {', '.join(allowed)}")

    def check(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={flat[key]!r} is not valid: {what}")

    from engine.models import list_models  # local import: models pull in torch

    models = list_models()
    if cfg.model.name not in models:
        raise ConfigError(f"model.name={cfg.model.name!r} is not valid; choose one of: {', '.join(models)}")
    check(cfg.model.width > 0, "model.width", "must be > 0")
    check(cfg.model.embedding_size > 0, "model.embedding_size", "must be > 0")
    check(0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1)")
    check(cfg.model.input_size >= 16 and cfg.model.input_size % 16 == 0, "model.input_size",
          "must be a multiple of 16")
    check(cfg.data.synthetic_identities >= 2, "data.synthetic_identities", "must be >= 2")
    check(cfg.data.synthetic_images_per_identity >= 1, "data.synthetic_images_per_identity", "must be >= 1")
    check(cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    check(not cfg.augment.resolutions or len(cfg.augment.resolutions) == len(cfg.augment.weights),
          "augment.weights",
          f"needs one weight per resolution ({len(cfg.augment.resolutions)})")
    check(all(r >= 1 for r in cfg.augment.resolutions), "augment.resolutions", "must be positive")
    check(all(w >= 0 for w in cfg.augment.weights), "augment.weights", "must be >= 0")
    check(not cfg.augment.resolutions or sum(cfg.augment.weights) > 0, "augment.weights",
          "must not all be zero")
    check(cfg.loss.s > 0, "loss.s", "must be > 0")
    check(cfg.loss.m >= 0, "loss.m", "must be >= 0")
    check(cfg.loss.p >= 1, "loss.p", "must be >= 1 (the paper uses 1 or 2)")
    check(cfg.loss.beta > 0, "loss.beta", "must be > 0 (the smooth-L1 threshold)")
    check(cfg.loss.lambda_ >= 0, "loss.lambda", "must be >= 0")
    check(cfg.optim.lr > 0, "optim.lr", "must be > 0")
    check(0 <= cfg.optim.momentum < 1, "optim.momentum", "must be in [0, 1)")
    check(cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    check(cfg.optim.batch_size >= 2, "optim.batch_size", "must be >= 2")
    check(cfg.optim.clip_grad_norm >= 0, "optim.clip_grad_norm", "must be >= 0 (0 = off)")
    check(cfg.schedule.epochs >= 1, "schedule.epochs", "must be >= 1")
    check(list(cfg.schedule.milestones) == sorted(cfg.schedule.milestones), "schedule.milestones",
          "must be increasing")
    check(0 < cfg.schedule.gamma <= 1, "schedule.gamma", "must be in (0, 1]")
    check(cfg.schedule.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
    check(cfg.schedule.max_steps >= 0, "schedule.max_steps", "must be >= 0 (0 = no cap)")
    check(_DEVICE_RE.fullmatch(cfg.train.device) is not None, "train.device",
          "use auto, cpu, cuda or cuda:N")
    if here:
        _check_device_here(cfg)
    check(cfg.train.log_every >= 1, "train.log_every", "must be >= 1")
    check(cfg.train.checkpoint_every_epochs >= 1, "train.checkpoint_every_epochs", "must be >= 1")
    check(all(r >= 1 for r in cfg.eval.resolutions), "eval.resolutions", "must be positive")
    check(cfg.eval.batch_size >= 1, "eval.batch_size", "must be >= 1")
    check(all(p in SCFACE_PROTOCOLS for p in cfg.eval.scface_protocols),
          "eval.scface_protocols", "use any of zero_shot (80 DCR test ids), finetune, zero_shot_all130")
    check(cfg.eval.scface_train_ids >= 1, "eval.scface_train_ids", "must be >= 1")
    check(cfg.eval.finetune_epochs >= 1, "eval.finetune_epochs", "must be >= 1")
    check(cfg.eval.finetune_lr > 0, "eval.finetune_lr", "must be > 0")
    check(cfg.eval.finetune_batch_size >= 2, "eval.finetune_batch_size", "must be >= 2")
    check(cfg.launch.gpus >= 0, "launch.gpus", "must be >= 0 (0 = CPU)")
    check(cfg.launch.nodes >= 1, "launch.nodes", "must be >= 1")
    check(cfg.launch.nodes == 1 or cfg.launch.launcher == "slurm", "launch.nodes",
          "more than 1 node needs launch.launcher=slurm (or torchrun on each node by hand: README, clusters)")
    check(cfg.launch.slurm_time_min >= 0, "launch.slurm_time_min", "must be >= 0 (0 = partition default)")
    check(cfg.launch.slurm_cpus_per_task >= 1, "launch.slurm_cpus_per_task", "must be >= 1")
    check(cfg.launch.slurm_mem_gb >= 0, "launch.slurm_mem_gb", "must be >= 0")
    check(_SLURM_NAME_RE.fullmatch(cfg.launch.slurm_partition) is not None, "launch.slurm_partition",
          "use letters, digits and _ . , + - only (a Slurm partition name or list)")
    from engine.augment import check_distinct_resolutions  # local import: augment pulls in torch

    check_distinct_resolutions(cfg.augment.resolutions, key="augment.resolutions")
    for bench in cfg.eval.benchmarks:
        spec = parse_benchmark(bench)  # ConfigError for an unknown benchmark or a malformed BENCH=DATASET
        if spec.dataset is not None and cfg.eval.source != "catalog":
            raise ConfigError(f"eval.benchmarks: {bench!r} names a catalog dataset, but eval.source="
                              f"{cfg.eval.source} evaluates on stand-ins; set eval.source=catalog")


def _check_device_here(cfg: RunConfig) -> None:
    """A CUDA device must exist on this machine, unless the run goes to Slurm (it runs on a GPU node)."""
    device = cfg.train.device
    if not device.startswith("cuda") or cfg.launch.launcher == "slurm":
        return
    import torch  # local import: only a CUDA setting needs it

    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={device!r} is not valid: CUDA is not available on this machine "
                          "(use auto or cpu, or launch.launcher=slurm)")
    index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"train.device={device!r} is not valid: this machine has {count} CUDA device(s) "
                          f"(cuda:0 to cuda:{count - 1})")


# ---------------------------------------------------------------- presets


def _preset_files() -> dict[str, Any]:
    root = resources.files("engine") / "presets"
    return {p.name[: -len(".toml")]: p for p in root.iterdir() if p.name.endswith(".toml")}


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description, sorted by name."""
    out = {}
    for name, path in sorted(_preset_files().items()):
        data = tomllib.loads(path.read_text())
        out[name] = str(data.get("description", ""))
    return out


def _load_preset_chain(name: str, seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    files = _preset_files()
    if name not in files:
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(sorted(files))}")
    if name in seen:
        raise ConfigError(f"preset {name!r} extends itself ({' -> '.join(seen + (name,))})")
    data = tomllib.loads(files[name].read_text())
    parent = data.get("extends")
    chain = _load_preset_chain(parent, seen + (name,)) if parent else []
    return chain + [data]


def resolve(preset: str | None = None, overrides: list[str] | None = None,
            config_file: str | Path | None = None) -> RunConfig:
    """Preset (with its ``extends`` chain), then a TOML file, then ``key=value`` overrides."""
    cfg = RunConfig()
    if preset:
        for layer in _load_preset_chain(preset):
            _apply_nested(cfg, layer, origin=f"preset {preset}")
        cfg.preset = preset
        if not cfg.name:
            cfg.name = preset
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        _apply_nested(cfg, data, origin=str(path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_value(cfg, key, value)
    validate(cfg)
    return cfg


def to_toml(cfg: RunConfig) -> str:
    """Render a resolved config as TOML (what ``lrfr config`` prints)."""
    nested = to_dict(cfg)
    lines = [f"{k} = {_toml_value(nested[k])}" for k in TOP_LEVEL]
    for name in SECTIONS:
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in nested[name].items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)
