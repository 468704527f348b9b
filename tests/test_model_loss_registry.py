"""The torch-free model and loss registries (engine.models.registry, engine.loss_registry): every declared entry
has a builder and every builder is declared, and what a declaration says (depths, block, dropout, size, the
options a loss reads) is what the built network or loss does."""

from __future__ import annotations

import inspect

import pytest
import torch

from engine import losses
from engine.config import RunConfig, flatten
from engine.errors import ConfigError
from engine.loss_registry import distance_info, distance_names, distances, head_info, head_names, heads
from engine.models import MODELS, get_model, iresnet, resnet
from engine.models import registry as model_registry
from engine.registry import Bindings

# The keywords every backbone constructor takes besides its declared options (get_model passes them).
COMMON_MODEL_KEYWORDS = {"embedding_size", "width", "dropout", "input_size"}


# ---------------------------------------------------------------- the binding mechanism


def test_bindings_refuse_undeclared_duplicate_and_missing_names():
    declared = ["a", "b"]
    bindings: Bindings = Bindings("widget", lambda: declared, "tests.widgets", "register_widget", verb="is made by")

    @bindings.register("a")
    def make_a():
        return "A"

    assert make_a() == "A"  # the decorator returns what it decorates
    with pytest.raises(KeyError, match=r"widget 'c' is not declared in tests.widgets; declare it there before "
                                       r"register_widget\('c'\) \(declared: a, b\)"):
        bindings.register("c")
    with pytest.raises(KeyError, match="widget 'a' already is made by .*make_a"):
        bindings.register("a")(lambda: "other")
    with pytest.raises(KeyError, match="^'declared in tests.widgets but never registered with register_widget: b'$"):
        bindings.complete()
    bindings.register("b")(lambda: "B")
    assert list(bindings.complete()) == ["a", "b"]  # declaration order
    with pytest.raises(KeyError, match="registered with register_widget but not declared in tests.widgets: b"):
        bindings.complete(["a"])


# ---------------------------------------------------------------- models


def _module_builders(module) -> set:
    """The functions of a model module that build a whole backbone (annotated to return the network class)."""
    return {fn for name, fn in vars(module).items()
            if inspect.isfunction(fn) and fn.__module__ == module.__name__
            and inspect.signature(fn).return_annotation in ("IResNet", "ResNet")}


def test_every_declared_model_has_a_builder_and_every_builder_is_declared():
    assert tuple(MODELS) == model_registry.model_names()
    assert tuple(model_registry.builders()) == model_registry.model_names()
    # The other direction: a backbone-building function in the model modules without @register_model.
    found = _module_builders(iresnet) | _module_builders(resnet)
    assert found == set(MODELS.values())
    assert len(found) == 6


def test_model_names_and_lookups():
    assert model_registry.list_models() == sorted(model_registry.model_names())
    assert model_registry.model_info("resnet34").released is True
    with pytest.raises(KeyError, match="unknown model 'vit'; the engine's models are: iresnet100, iresnet18"):
        model_registry.model_info("vit")
    with pytest.raises(ConfigError, match=r"^unknown model 'vit'; valid models: iresnet100, iresnet18, iresnet34, "
                                          r"iresnet50, resnet34, resnet50$"):
        get_model("vit")
    with pytest.raises(KeyError, match="model 'iresnet34' already is built by iresnet34"):
        model_registry.register_model("iresnet34")(lambda **kw: None)


@pytest.mark.parametrize("info", model_registry.models(), ids=lambda info: info.name)
def test_a_declaration_describes_the_network_it_builds(info):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = get_model(info.name)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert tuple(len(stage) for stage in stages) == info.layers
    assert {type(block).__name__ for stage in stages for block in stage} == {info.block}
    assert model.dropout.p == info.default_dropout
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == info.params_m
    assert info.released == (info.family == model_registry.RELEASED_RESNET) == isinstance(model, resnet.ResNet)
    constructor = type(model).__init__
    keywords = set(inspect.signature(constructor).parameters) - {"self", "block", "layers"}
    assert keywords - COMMON_MODEL_KEYWORDS == set(info.options)
    assert info.description and "\n" not in info.description


# ---------------------------------------------------------------- losses


def test_every_declared_loss_term_has_a_builder_and_every_builder_is_declared():
    assert losses.HEAD_KINDS == head_names() == ("cosface", "arcface", "softmax")
    assert losses.DISTANCE_LOSSES == distance_names() == ("none", "l1", "l2", "smoothl1", "logexp")
    assert tuple(losses._HEAD_BUILDERS) == head_names()
    assert tuple(losses._DISTANCE_BUILDERS) == distance_names()
    # The other direction: every concrete head class is registered ...
    head_classes = {obj for name, obj in vars(losses).items() if isinstance(obj, type)
                    and issubclass(obj, losses._Head) and not name.startswith("_")}
    assert head_classes == set(losses._HEAD_BUILDERS.values()) == {losses.CosFace, losses.ArcFace, losses.SoftmaxHead}
    # ... and every public distance function is what some declared term builds.
    public = {getattr(losses, name) for name in losses.__all__ if name.endswith("_loss") and not name.startswith("build")}
    built = set()
    for name in distance_names():
        fn = losses.build_distance_loss(name)
        if fn is not None:
            built.add(getattr(fn, "func", fn))
    assert built == public == {losses.l1_loss, losses.l2_loss, losses.smooth_l1_loss, losses.logexp_loss}


def test_declared_options_are_config_keys_and_exactly_the_builders_keywords():
    config_keys = set(flatten(RunConfig()))
    for info in (*heads(), *distances()):
        assert set(info.options) <= config_keys, info.name
        assert info.description and "\n" not in info.description
        parameters = set(inspect.signature(losses._HEAD_BUILDERS.get(info.name)
                                           or losses._DISTANCE_BUILDERS[info.name]).parameters)
        assert parameters - {"embedding_size", "num_classes"} == set(info.keywords), info.name
    assert head_info("cosface").options == ("loss.s", "loss.m")
    assert distance_info("logexp").options == ("loss.p", "loss.reduction")
    assert distance_info("smoothl1").options == ("loss.beta",)
    with pytest.raises(KeyError, match="unknown loss head 'sphereface'; the engine's heads are: cosface, arcface"):
        head_info("sphereface")
    with pytest.raises(KeyError, match="unknown distance term 'cosine'"):
        distance_info("cosine")


# Two values of each loss option, both valid for every term (the builders check reduction and beta for all).
HEAD_VALUES = {"s": (48.0, 16.0), "m": (0.4, 0.1)}
DISTANCE_VALUES = {"p": (1.0, 2.0), "reduction": ("sample", "batch"), "beta": (0.02, 0.3)}


@pytest.mark.parametrize("name", head_names())
def test_a_head_reads_exactly_its_declared_options(name):
    gen = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(8, 16, generator=gen), torch.randint(0, 5, (8,), generator=gen)

    def loss(**opts) -> float:
        torch.manual_seed(0)  # the same class centres for every build
        values = {word: pair[0] for word, pair in HEAD_VALUES.items()} | opts
        return losses.build_head(name, 16, 5, **values)(emb, labels).item()

    base = loss()
    for word, (_, other) in HEAD_VALUES.items():
        changed = loss(**{word: other}) != base
        assert changed == (f"loss.{word}" in head_info(name).options), (name, word)


@pytest.mark.parametrize("name", distance_names())
def test_a_distance_term_reads_exactly_its_declared_options(name):
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(6, 32, generator=gen), dim=1)
    y = torch.nn.functional.normalize(x + 0.3 * torch.randn(6, 32, generator=gen), dim=1)

    def loss(**opts) -> float | None:
        values = {word: pair[0] for word, pair in DISTANCE_VALUES.items()} | opts
        fn = losses.build_distance_loss(name, **values)
        return None if fn is None else fn(x, y).item()

    base = loss()
    assert (base is None) == (name == "none")
    for word, (_, other) in DISTANCE_VALUES.items():
        changed = loss(**{word: other}) != base
        assert changed == (f"loss.{word}" in distance_info(name).options), (name, word)
