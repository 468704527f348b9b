import pytest

from engine.config import flatten, from_dict, list_presets, resolve, to_dict, to_toml
from engine.errors import ConfigError

TABLE4 = ["baseline", "aug14", "maug", "paug-logexp-p1", "aug14-l1", "aug14-logexp-p1", "maug-logexp-p1",
          "aug14-l2", "aug14-logexp-p2", "maug-logexp-p2"]


def test_every_preset_resolves_and_has_a_description():
    presets = list_presets()
    for name in ["r34", "r50", "tiny", *TABLE4]:
        assert name in presets and presets[name]
        cfg = resolve(name)
        assert cfg.preset == name


def test_paper_recipes():
    r34 = resolve("r34")
    assert (r34.model.name, r34.optim.lr, r34.schedule.epochs, r34.schedule.milestones) == ("iresnet34", 0.1, 28, [16, 24])
    assert (r34.augment.resolutions, r34.augment.weights) == ([7, 14, 20], [1.0, 1.0, 2.0])
    assert (r34.loss.s, r34.loss.m, r34.loss.distance, r34.loss.lambda_) == (48.0, 0.4, "logexp", 1.0)
    r50 = resolve("r50")
    assert (r50.model.name, r50.optim.lr, r50.schedule.epochs, r50.schedule.milestones) == ("iresnet50", 0.01, 16, [8, 12])
    code = resolve("r34-code")
    assert code.augment.weights == [0.5, 0.0, 0.5] and code.loss.reduction == "batch" and code.schedule.epochs == 29


def test_table4_presets_differ_only_in_augmentation_and_distance():
    base = flatten(resolve("r34"))
    expected = {
        "baseline": {"augment.resolutions": [], "augment.weights": [], "loss.distance": "none"},
        "aug14": {"augment.resolutions": [14], "augment.weights": [1.0], "loss.distance": "none"},
        "aug14-l2": {"augment.resolutions": [14], "augment.weights": [1.0], "loss.distance": "l2"},
        "maug-logexp-p2": {"loss.p": 2.0},
    }
    for name, changes in expected.items():
        flat = flatten(resolve(name))
        diff = {k: v for k, v in flat.items() if base[k] != v and k not in ("name", "preset", "description")}
        assert diff == changes, name


def test_overrides_are_typed():
    cfg = resolve("tiny", ["optim.lr=0.01", "augment.resolutions=[7, 14]", "augment.weights=1,3",
                           "train.channels_last=false", "loss.lambda=2", "schedule.epochs=7"])
    assert cfg.optim.lr == 0.01 and cfg.augment.resolutions == [7, 14] and cfg.augment.weights == [1.0, 3.0]
    assert cfg.train.channels_last is False and cfg.loss.lambda_ == 2.0 and cfg.schedule.epochs == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.learning_rate=0.1", "valid keys in [optim]: optim.lr"),
        ("optimizer.lr=0.1", "unknown config key 'optimizer.lr'"),
        ("optim.lr=fast", "optim.lr: expected a number"),
        ("schedule.epochs=2.5", "schedule.epochs: expected an integer"),
        ("loss.distance=cosine", "choose one of: none, l1, l2, smoothl1, logexp"),
        ("model.name=vit", "choose one of"),
        ("augment.weights=[1,1]", "needs one weight per resolution"),
        ("optim.lr=-1", "optim.lr=-1.0 is not valid"),
        ("eval.benchmarks=[nope]", "unknown benchmark 'nope'"),
        ("eval.source=internet", "choose one of: catalog, synthetic"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve("tiny", [override])


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="available presets: .*tiny"):
        resolve("r999")


def test_round_trip_through_dict_and_toml(tmp_path):
    cfg = resolve("r34-code", ["optim.lr=0.2"])
    assert from_dict(to_dict(cfg)) == cfg
    path = tmp_path / "cfg.toml"
    path.write_text(to_toml(cfg))
    assert resolve(config_file=path) == cfg


def test_every_list_value_lrfr_config_prints_is_accepted_back_by_set():
    """`lrfr config` prints lists as TOML (`benchmarks = ["lfw", "xqlfw"]`, `resolutions = [7, 14, 20]`);
    pasting a printed line's value into `--set key=VALUE` gives the same config, for every preset."""
    from engine.config import flatten, list_presets, to_toml

    for preset in list_presets():
        cfg = resolve(preset)
        section = ""
        for line in to_toml(cfg).splitlines():
            if line.startswith("["):
                section = line.strip("[]") + "."
                continue
            key, sep, text = line.partition(" = ")
            if not sep or not text.startswith("["):
                continue
            again = resolve(preset, [f"{section}{key}={text}"])
            assert flatten(again) == flatten(cfg), (preset, section + key, text)
