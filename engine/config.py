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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from engine.config_rules import (
    Above,
    AtLeast,
    Each,
    EachParses,
    FullMatch,
    Increasing,
    InRange,
    MultipleOf,
    OneOf,
    Positive,
    Rule,
    SubsetOf,
    invalid,
    rule_of,
    setting,
)
from engine.errors import ConfigError
from engine.evaluate.registry import LOWRES_MODES, SCFACE_PROTOCOLS, parse_benchmark
from engine.loss_registry import DISTANCE_REDUCTIONS, distance_names, head_names
from engine.models.registry import list_models

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


# train.device: auto, cpu, cuda or cuda:N (N a non-negative integer).
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
# Strings that end up in a Slurm batch script (as #SBATCH values): Slurm names, nothing a shell or
# sbatch could read as a new line, a comment or an expansion.
_SLURM_NAME_RE = re.compile(r"[A-Za-z0-9_.,+-]*")

# Each field's rule (engine.config_rules) sits next to its default; validate() walks them in this order.
# A rule that relates two fields is a function after its section, listed in _CROSS_FIELD_RULES.


@dataclass
class ModelConfig:
    # Any backbone declared in engine.models.registry (listed sorted, as list_models() gives them).
    name: str = setting("iresnet34", OneOf(tuple(list_models())))
    width: float = setting(1.0, Above(0))
    embedding_size: int = setting(512, Above(0))
    dropout: float = setting(0.0, InRange(0, 1))
    # Four stride-2 halvings: a multiple of 16 keeps every feature map exact.
    input_size: int = setting(112, MultipleOf(16))


@dataclass
class DataConfig:
    # "synthetic" uses the built-in face generator; any other name is looked up in the catalog.
    dataset: str = "synthetic"
    synthetic_identities: int = setting(300, AtLeast(2))
    synthetic_images_per_identity: int = setting(12, AtLeast(1))
    synthetic_seed: int = 0
    num_workers: int = setting(2, AtLeast(0))
    # "raise" stops at the first unreadable image (naming it); "skip" drops and counts them.
    on_error: str = setting("raise", OneOf(("raise", "skip")))
    # How training images are read: "auto" = the catalog entry's decoded-face pack when it has one (see
    # `lrfr data pack`), else decoded with PIL in the loader workers; "pack" = a pack or an error;
    # "decode" = PIL even where a pack exists; "gpu_decode" = JPEG bytes decoded in batches on the GPU
    # (torchvision.io.decode_jpeg on CUDA), for a dataset too big to pack.
    reader: str = setting("auto", OneOf(("auto", "pack", "decode", "gpu_decode")))


@dataclass
class AugmentConfig:
    # Resolutions (px) of the LR copy and their sampling weights. Empty = no LR branch (baseline).
    resolutions: list[int] = setting([7, 14, 20], Each(Positive()))
    weights: list[float] = setting([1.0, 1.0, 2.0], Each(AtLeast(0)))
    flip: bool = True


def check_distinct_resolutions(resolutions: Sequence[int], key: str = "augment.resolutions") -> None:
    """Each resolution once, with its one weight: the rule ``ResolutionSampler`` and config validation share.
    Here (torch-free) so that validating a config does not import ``engine.augment``."""
    repeated = sorted(r for r, n in Counter(resolutions).items() if n > 1)
    if repeated:
        raise invalid(key, list(resolutions), "each resolution may appear only once "
                                              f"(repeated: {', '.join(map(str, repeated))})")


def _augment_weights_fit_resolutions(cfg: RunConfig) -> None:
    """One weight per resolution, not all zero, each resolution once (all moot without an LR branch)."""
    aug = cfg.augment
    if aug.resolutions and len(aug.resolutions) != len(aug.weights):
        raise invalid("augment.weights", _plain(aug.weights),
                      f"needs one weight per resolution ({len(aug.resolutions)})")
    if aug.resolutions and sum(aug.weights) <= 0:
        raise invalid("augment.weights", _plain(aug.weights), "must not all be zero")
    check_distinct_resolutions(aug.resolutions, key="augment.resolutions")


@dataclass
class LossConfig:
    # The heads and distance terms declared in engine.loss_registry, in its order.
    head: str = setting("cosface", OneOf(head_names()))
    s: float = setting(48.0, Above(0))
    m: float = setting(0.4, AtLeast(0))
    distance: str = setting("logexp", OneOf(distance_names()))
    p: float = setting(1.0, AtLeast(1, "the paper uses 1 or 2"))
    # "sample": the paper's per-sample Eq. 3; "batch": the released code's single log over the batch.
    reduction: str = setting("sample", OneOf(DISTANCE_REDUCTIONS))
    # Threshold of distance = "smoothl1" (torch's smooth_l1_loss beta), > 0. Not torch's default 1: on
    # unit-normalised embeddings every coordinate difference is far below 1 (rms <= 2/sqrt(512) ~ 0.09
    # for 512-d), so beta = 1 is exactly the L2 loss. 0.02 is the rms coordinate difference of a pair
    # with cosine 0.9: aligned pairs stay quadratic, worse ones get L1 gradients (engine.losses.SMOOTH_L1_BETA).
    beta: float = setting(0.02, Above(0, "the smooth-L1 threshold"))
    # Written ``loss.lambda`` in presets and overrides (``lambda`` is a Python keyword).
    lambda_: float = setting(1.0, AtLeast(0))


@dataclass
class OptimConfig:
    lr: float = setting(0.1, Above(0))
    momentum: float = setting(0.9, InRange(0, 1))
    weight_decay: float = setting(5e-4, AtLeast(0))
    batch_size: int = setting(256, AtLeast(2))
    # Clip the global gradient norm to this value; 0 disables clipping.
    clip_grad_norm: float = setting(0.0, AtLeast(0, "0 = off"))
    # SGD implementation: "auto" = fused on CUDA, torch's default elsewhere; or fused | foreach | for_loop.
    sgd: str = setting("auto", OneOf(("auto", "fused", "foreach", "for_loop")))


@dataclass
class ScheduleConfig:
    epochs: int = setting(28, AtLeast(1))
    milestones: list[int] = setting([16, 24], Increasing())
    gamma: float = setting(0.1, InRange(0, 1, closed="(]"))
    warmup_epochs: float = setting(0.0, AtLeast(0))
    # Stop after this many optimiser steps in total (0 = run all epochs). For smoke runs and tests.
    max_steps: int = setting(0, AtLeast(0, "0 = no cap"))


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = setting("auto", FullMatch(_DEVICE_RE, "use auto, cpu, cuda or cuda:N"))
    # auto: bf16 on CUDA and on CPUs with bf16 instructions (AVX512-BF16/AMX), fp32 on other CPUs.
    amp: str = setting("auto", OneOf(("auto", "off", "bf16", "fp16")))
    channels_last: bool = True
    log_every: int = setting(20, AtLeast(1))
    checkpoint_every_epochs: int = setting(1, AtLeast(1))
    # torch.compile the Siamese module (backbone + head + distance loss); off until measured per setup.
    compile: bool = False
    # torch's intra-op threads in training and in its evaluation (at most the cores this process may use);
    # 0 = auto: those cores (per process on the node) minus the DataLoader workers, at least 1
    # (engine/threads.py).
    threads: int = setting(0, AtLeast(0, "0 = auto"))


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


@dataclass
class EvalConfig:
    # Any of: lfw, xqlfw, scface, tinyface, lowres_lfw (declared in `engine.evaluate.registry`), each on its own
    # catalog entry (lowres_lfw reads lfw), or BENCH=DATASET to run that protocol on another registered
    # dataset of a format it reads: "xqlfw=my_pairs" (results under the benchmark "xqlfw:my_pairs").
    benchmarks: list[str] = setting(["lfw", "xqlfw", "scface"],
                                    EachParses(parse_benchmark, "BENCHMARK or BENCHMARK=DATASET"))
    # "catalog": the datasets registered under the benchmark's name (`lrfr data add lfw PATH`);
    # "synthetic": stand-ins generated in the real file formats (no download needed).
    source: str = setting("catalog", OneOf(("catalog", "synthetic")))
    standin_size: str = setting("tiny", OneOf(("tiny", "test")))
    # lowres_lfw probe resolutions in px (a value >= the input size is the HR image) and which
    # images of a pair are degraded: "second" (cross-resolution), "both", or "random" (seeded sizes).
    resolutions: list[int] = setting([7, 10, 14, 20, 28, 42, 56, 112], Each(Positive()))
    lowres_mode: str = setting("second", OneOf(LOWRES_MODES))  # one protocol each (engine.evaluate.registry)
    batch_size: int = setting(128, AtLeast(1))
    seed: int = 0
    # SCface, any of: "zero_shot" = no fine-tuning, on the DCR split's test ids (80 of 130; the paper's
    # "w/o fine-tuning", Tables 1, 4, 6); "finetune" = fine-tune on the other scface_train_ids subjects,
    # test on the same ids (Table 1); "zero_shot_all130" = no fine-tuning on every subject (not in the paper).
    # The split is seeded (eval.seed) and saved as scface_split.json in the run directory.
    scface_protocols: list[str] = setting(["zero_shot", "finetune"], SubsetOf(
        SCFACE_PROTOCOLS, "use any of zero_shot (80 DCR test ids), finetune, zero_shot_all130"))
    scface_train_ids: int = setting(50, AtLeast(1))
    # TinyFace: also fine-tune on its Training_Set before testing (the paper's Table 2 setting).
    tinyface_finetune: bool = False
    finetune_epochs: int = setting(10, AtLeast(1))
    finetune_lr: float = setting(0.01, Above(0))
    finetune_batch_size: int = setting(64, AtLeast(2))


def _catalog_datasets_need_the_catalog(cfg: RunConfig) -> None:
    """``BENCH=DATASET`` reads a catalog entry, which stand-ins (``eval.source=synthetic``) do not have."""
    for bench in cfg.eval.benchmarks:
        if parse_benchmark(bench).dataset is not None and cfg.eval.source != "catalog":
            raise ConfigError(f"eval.benchmarks: {bench!r} names a catalog dataset, but eval.source="
                              f"{cfg.eval.source} evaluates on stand-ins; set eval.source=catalog")


@dataclass
class LaunchConfig:
    """How the experiment manager starts the run (ignored by a plain ``engine.train.train`` call)."""

    # GPUs the run asks for; 0 = CPU. More than 1 starts torchrun with one process per GPU (DDP).
    gpus: int = setting(1, AtLeast(0, "0 = CPU"))
    # "local": a process on this machine; "slurm": a Slurm job (through submitit).
    launcher: str = setting("local", OneOf(("local", "slurm")))
    slurm_partition: str = setting("", FullMatch(
        _SLURM_NAME_RE, "use letters, digits and _ . , + - only (a Slurm partition name or list)"))
    slurm_time_min: int = setting(0, AtLeast(0, "0 = partition default"))  # 0 = the partition's default limit
    slurm_cpus_per_task: int = setting(8, AtLeast(1))
    slurm_mem_gb: int = setting(0, AtLeast(0))  # 0 = the partition's default
    # Machines the run spans (DDP over nodes; `gpus` is per node). More than 1 needs launcher "slurm".
    nodes: int = setting(1, AtLeast(1))
    # The worker reports through runs/<id>/journal.jsonl instead of opening runs.db: "auto" = for Slurm.
    journal: str = setting("auto", OneOf(("auto", "on", "off")))
    # Slurm: on the pre-timeout signal, checkpoint and requeue the job, which resumes as the same run.
    slurm_requeue: bool = False


def _nodes_need_slurm(cfg: RunConfig) -> None:
    """DDP over several machines is started per node by the Slurm launcher (or by hand with torchrun)."""
    if cfg.launch.nodes > 1 and cfg.launch.launcher != "slurm":
        raise invalid("launch.nodes", cfg.launch.nodes, "more than 1 node needs launch.launcher=slurm (or "
                                                        "torchrun on each node by hand: README, clusters)")


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
# The section classes, by section name (each RunConfig section field's default_factory).
_SECTION_TYPES: dict[str, type] = {f.name: f.default_factory for f in fields(RunConfig) if f.name in SECTIONS}

# The rules that relate fields, checked after every field's own rule (so each sees well-formed values).
_CROSS_FIELD_RULES: tuple[Callable[[RunConfig], None], ...] = (
    _augment_weights_fit_resolutions,
    _catalog_datasets_need_the_catalog,
    _nodes_need_slurm,
)


def _key(field_name: str) -> str:
    """The user-facing name of a field (``lambda_`` -> ``lambda``)."""
    return field_name.rstrip("_")


def _section_fields(section: Any) -> dict[str, dataclasses.Field]:
    return {_key(f.name): f for f in fields(section)}


def field_rules() -> dict[str, Rule]:
    """``{"optim.lr": Above(0), ...}``: every field's own rule, in the order validate() checks them."""
    return {f"{name}.{_key(f.name)}": rule for name in SECTIONS for f in fields(_SECTION_TYPES[name])
            if (rule := rule_of(f)) is not None}


# Allowed values of the string options that select behaviour (the OneOf rules above), for the callers that
# list them.
CHOICES: dict[str, tuple[str, ...]] = {key: rule.allowed for key, rule in field_rules().items()
                                       if isinstance(rule, OneOf)}


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
            try:  # exactly what `lrfr config` prints: ["lfw", "xqlfw"], [7, 14, 20]
                return list(tomllib.loads(f"v = {text}")["v"])
            except tomllib.TOMLDecodeError:  # the shell-friendly form: [lfw, xqlfw]
                pass
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


def validate(cfg: RunConfig, *, here: bool = True) -> None:
    """Raise ConfigError naming the key for any value outside its allowed range.

    Each field's rule first (section by section, in field order), then the rules that relate fields.
    ``here``: also check what depends on this machine (a CUDA device for a run that is not sent to Slurm).
    """
    for name in SECTIONS:
        section = getattr(cfg, name)
        for f in fields(section):
            rule = rule_of(f)
            if rule is not None:
                rule.check(f"{name}.{_key(f.name)}", _plain(getattr(section, f.name)))
    for check in _CROSS_FIELD_RULES:
        check(cfg)
    if here:
        _check_device_here(cfg)


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
