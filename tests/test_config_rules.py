"""Config rules declared on the dataclass fields (engine.config_rules): validate() walks them, every refusal is
worded exactly as before the rules moved onto the fields, and validating loads neither torch nor numpy."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from engine import config
from engine.config import CHOICES, RunConfig, field_rules, flatten, resolve, validate
from engine.config_rules import Above, AtLeast, InRange, MultipleOf, OneOf, rule_of
from engine.errors import ConfigError
from engine.evaluate.registry import LOWRES_MODES
from engine.loss_registry import DISTANCE_REDUCTIONS, distance_names, head_names
from engine.models.registry import list_models

ROOT = Path(__file__).resolve().parent.parent

# Overrides on the tiny preset and the message validate() gave for them before the rules were declared on
# the fields (captured from the chain of checks they replace); None: accepted.
MESSAGES = [
    (['data.on_error=ignore'], "data.on_error='ignore' is not valid; choose one of: raise, skip"),
    (['loss.head=sphereface'], "loss.head='sphereface' is not valid; choose one of: cosface, arcface, softmax"),
    (['loss.distance=cosine'], "loss.distance='cosine' is not valid; choose one of: none, l1, l2, smoothl1, logexp"),
    (['loss.reduction=mean'], "loss.reduction='mean' is not valid; choose one of: sample, batch"),
    (['train.amp=fp8'], "train.amp='fp8' is not valid; choose one of: auto, off, bf16, fp16"),
    (['eval.source=web'], "eval.source='web' is not valid; choose one of: catalog, synthetic"),
    (['eval.standin_size=huge'], "eval.standin_size='huge' is not valid; choose one of: tiny, test"),
    (['eval.lowres_mode=first'], "eval.lowres_mode='first' is not valid; choose one of: second, both, random"),
    (['launch.launcher=k8s'], "launch.launcher='k8s' is not valid; choose one of: local, slurm"),
    (['model.name=vit'], "model.name='vit' is not valid; choose one of: iresnet100, iresnet18, iresnet34, iresnet50, resnet34, resnet50"),
    (['model.width=0'], 'model.width=0.0 is not valid: must be > 0'),
    (['model.embedding_size=0'], 'model.embedding_size=0 is not valid: must be > 0'),
    (['model.dropout=1'], 'model.dropout=1.0 is not valid: must be in [0, 1)'),
    (['model.dropout=-0.1'], 'model.dropout=-0.1 is not valid: must be in [0, 1)'),
    (['model.input_size=100'], 'model.input_size=100 is not valid: must be a multiple of 16'),
    (['model.input_size=0'], 'model.input_size=0 is not valid: must be a multiple of 16'),
    (['data.synthetic_identities=1'], 'data.synthetic_identities=1 is not valid: must be >= 2'),
    (['data.synthetic_images_per_identity=0'], 'data.synthetic_images_per_identity=0 is not valid: must be >= 1'),
    (['data.num_workers=-1'], 'data.num_workers=-1 is not valid: must be >= 0'),
    (['augment.weights=[1,1]'], 'augment.weights=[1.0, 1.0] is not valid: needs one weight per resolution (3)'),
    (['augment.resolutions=[0,14,20]'], 'augment.resolutions=[0, 14, 20] is not valid: must be positive'),
    (['augment.weights=[1,-1,2]'], 'augment.weights=[1.0, -1.0, 2.0] is not valid: must be >= 0'),
    (['augment.weights=[0,0,0]'], 'augment.weights=[0.0, 0.0, 0.0] is not valid: must not all be zero'),
    (['augment.resolutions=[]', 'augment.weights=[]'], None),
    (['augment.resolutions=[]', 'augment.weights=[1]'], None),
    (['augment.resolutions=[7,7,20]'], 'augment.resolutions=[7, 7, 20] is not valid: each resolution may appear only once (repeated: 7)'),
    (['loss.s=0'], 'loss.s=0.0 is not valid: must be > 0'),
    (['loss.m=-0.1'], 'loss.m=-0.1 is not valid: must be >= 0'),
    (['loss.p=0.5'], 'loss.p=0.5 is not valid: must be >= 1 (the paper uses 1 or 2)'),
    (['loss.beta=0'], 'loss.beta=0.0 is not valid: must be > 0 (the smooth-L1 threshold)'),
    (['loss.lambda=-1'], 'loss.lambda=-1.0 is not valid: must be >= 0'),
    (['optim.lr=0'], 'optim.lr=0.0 is not valid: must be > 0'),
    (['optim.momentum=1'], 'optim.momentum=1.0 is not valid: must be in [0, 1)'),
    (['optim.weight_decay=-1'], 'optim.weight_decay=-1.0 is not valid: must be >= 0'),
    (['optim.batch_size=1'], 'optim.batch_size=1 is not valid: must be >= 2'),
    (['optim.clip_grad_norm=-1'], 'optim.clip_grad_norm=-1.0 is not valid: must be >= 0 (0 = off)'),
    (['schedule.epochs=0'], 'schedule.epochs=0 is not valid: must be >= 1'),
    (['schedule.milestones=[24,16]'], 'schedule.milestones=[24, 16] is not valid: must be increasing'),
    (['schedule.milestones=[16,16]'], None),
    (['schedule.gamma=0'], 'schedule.gamma=0.0 is not valid: must be in (0, 1]'),
    (['schedule.gamma=1.5'], 'schedule.gamma=1.5 is not valid: must be in (0, 1]'),
    (['schedule.gamma=1'], None),
    (['schedule.warmup_epochs=-1'], 'schedule.warmup_epochs=-1.0 is not valid: must be >= 0'),
    (['schedule.max_steps=-1'], 'schedule.max_steps=-1 is not valid: must be >= 0 (0 = no cap)'),
    (['train.device=gpu'], "train.device='gpu' is not valid: use auto, cpu, cuda or cuda:N"),
    (['train.log_every=0'], 'train.log_every=0 is not valid: must be >= 1'),
    (['train.checkpoint_every_epochs=0'], 'train.checkpoint_every_epochs=0 is not valid: must be >= 1'),
    (['eval.resolutions=[7,0]'], 'eval.resolutions=[7, 0] is not valid: must be positive'),
    (['eval.batch_size=0'], 'eval.batch_size=0 is not valid: must be >= 1'),
    (['eval.scface_protocols=[zero_shot,rank1]'], "eval.scface_protocols=['zero_shot', 'rank1'] is not valid: use any of zero_shot (80 DCR test ids), finetune, zero_shot_all130"),
    (['eval.scface_train_ids=0'], 'eval.scface_train_ids=0 is not valid: must be >= 1'),
    (['eval.finetune_epochs=0'], 'eval.finetune_epochs=0 is not valid: must be >= 1'),
    (['eval.finetune_lr=0'], 'eval.finetune_lr=0.0 is not valid: must be > 0'),
    (['eval.finetune_batch_size=1'], 'eval.finetune_batch_size=1 is not valid: must be >= 2'),
    (['launch.gpus=-1'], 'launch.gpus=-1 is not valid: must be >= 0 (0 = CPU)'),
    (['launch.slurm_time_min=-1'], 'launch.slurm_time_min=-1 is not valid: must be >= 0 (0 = partition default)'),
    (['launch.slurm_cpus_per_task=0'], 'launch.slurm_cpus_per_task=0 is not valid: must be >= 1'),
    (['launch.slurm_mem_gb=-1'], 'launch.slurm_mem_gb=-1 is not valid: must be >= 0'),
    (['launch.slurm_partition=a b'], "launch.slurm_partition='a b' is not valid: use letters, digits and _ . , + - only (a Slurm partition name or list)"),
    (['eval.benchmarks=[lfw,lfw2]'], "eval.benchmarks: unknown benchmark 'lfw2'; choose from: lfw, lowres_lfw, scface, tinyface, xqlfw"),
    (['eval.benchmarks=[xqlfw=a/b]'], "eval.benchmarks: 'xqlfw=a/b' is not BENCHMARK=DATASET with DATASET a registered dataset name (letters, digits and _ . + -), e.g. xqlfw=my_pairs"),
    (['eval.benchmarks=[tinyface=tf_v2]', 'eval.source=synthetic'], "eval.benchmarks: 'tinyface=tf_v2' names a catalog dataset, but eval.source=synthetic evaluates on stand-ins; set eval.source=catalog"),
    (['eval.benchmarks=[tinyface=tf_v2]'], "eval.benchmarks: 'tinyface=tf_v2' names a catalog dataset, but eval.source=synthetic evaluates on stand-ins; set eval.source=catalog"),
    (['model.name=resnet50', 'model.dropout=0.4'], None),
    (['loss.head=arcface', 'loss.distance=smoothl1'], None),
    (["train.device=cuda:-1"], "train.device='cuda:-1' is not valid: use auto, cpu, cuda or cuda:N"),
    # Boundaries that are allowed.
    (["model.dropout=0", "optim.momentum=0", "model.input_size=16", "loss.p=1", "loss.m=0"], None),
]


@pytest.mark.parametrize(("overrides", "message"), MESSAGES, ids=lambda v: v if isinstance(v, str) else None)
def test_each_refusal_is_worded_as_before(overrides, message):
    if message is None:
        resolve("tiny", overrides)
        return
    with pytest.raises(ConfigError) as refused:
        resolve("tiny", overrides)
    assert str(refused.value) == message


def test_validate_loads_neither_torch_nor_numpy():
    """engine.config checks model.name, loss.head and loss.distance against the torch-free registries."""
    code = (
        "import sys\n"
        "from engine.config import resolve, validate\n"
        "from engine.errors import ConfigError\n"
        "cfg = resolve('r34-code', ['model.name=resnet50', 'loss.head=arcface', 'loss.distance=smoothl1'])\n"
        "validate(cfg)\n"
        "for bad in ('model.name=vit', 'loss.head=sphereface', 'loss.distance=cosine',\n"
        "            'augment.resolutions=[7,7,20]', 'eval.benchmarks=[lfw2]'):\n"
        "    try:\n"
        "        resolve('tiny', [bad])\n"
        "    except ConfigError as exc:\n"
        "        print(exc)\n"
        "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    refused = done.stdout.splitlines()
    assert len(refused) == 5
    assert refused[0].startswith("model.name='vit' is not valid; choose one of: iresnet100")
    assert refused[3].startswith("augment.resolutions=[7, 7, 20] is not valid: each resolution may appear only once")


def test_choice_rules_come_from_the_registries():
    assert CHOICES["model.name"] == tuple(list_models())
    assert CHOICES["loss.head"] == head_names()
    assert CHOICES["loss.distance"] == distance_names()
    assert CHOICES["loss.reduction"] == DISTANCE_REDUCTIONS
    assert CHOICES["eval.lowres_mode"] == LOWRES_MODES
    # Every string option that selects behaviour is listed, and only OneOf rules are.
    assert set(CHOICES) == {"model.name", "data.on_error", "data.reader", "optim.sgd", "launch.journal", "loss.head", "loss.distance", "loss.reduction",
                            "train.amp", "eval.source", "eval.standin_size", "eval.lowres_mode", "launch.launcher"}


def test_rules_sit_on_the_fields_and_validate_walks_every_one():
    rules = field_rules()
    assert set(rules) <= set(flatten(RunConfig()))
    assert rules["optim.lr"] == Above(0)
    assert rules["schedule.gamma"] == InRange(0, 1, closed="(]")
    assert rules["model.input_size"] == MultipleOf(16)
    assert rules["loss.lambda"] == AtLeast(0)  # the user-facing key of lambda_
    # Each default passes its own rule.
    cfg = RunConfig()
    for section in config.SECTIONS:
        for f in fields(getattr(cfg, section)):
            if (rule := rule_of(f)) is not None:
                rule.check(f"{section}.{f.name}", getattr(getattr(cfg, section), f.name))
    # A value set directly (not through an override) is caught by the walk too.
    cfg = resolve("tiny")
    cfg.optim.momentum = 1.0
    with pytest.raises(ConfigError, match=r"^optim.momentum=1.0 is not valid: must be in \[0, 1\)$"):
        validate(cfg)


def test_a_rule_refuses_in_one_of_the_two_forms():
    with pytest.raises(ConfigError, match=r"^k='c' is not valid; choose one of: a, b$"):
        OneOf(("a", "b")).check("k", "c")
    with pytest.raises(ConfigError, match=r"^k=-1 is not valid: must be >= 0 \(0 = off\)$"):
        AtLeast(0, "0 = off").check("k", -1)
    assert InRange(0, 1, closed="[]").ok(1) and not InRange(0, 1, closed="()").ok(0)
    assert not MultipleOf(16).ok(0) and MultipleOf(16).ok(32) and not MultipleOf(16).ok(40)


def test_the_sampler_and_the_config_share_the_duplicate_rule():
    from engine.augment import check_distinct_resolutions

    assert check_distinct_resolutions is config.check_distinct_resolutions
