import pytest

from metagrad.config import Config, config_from_dict, dump_yaml, load_config, preset_names
from metagrad.errors import ConfigError


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name, tmp_path):
    config = load_config(name)
    assert config.name == name
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(config))
    assert load_config(path) == config


def test_paper_sinusoid_settings():
    config = load_config("maml-sinusoid-5shot")
    assert (config.task.k_shot, config.algorithm.inner_lr, config.algorithm.inner_steps) == (
        5,
        0.01,
        1,
    )
    assert (config.train.meta_batch_size, config.train.outer_lr, config.train.iterations) == (
        25,
        1e-3,
        70_000,
    )
    assert config.model.hidden == (40, 40)


def test_overrides_are_typed_and_nested():
    config = load_config(
        "maml-sinusoid-5shot",
        [
            "train.iterations=10",
            "train.outer_lr=1e-4",
            "model.hidden=[8, 8]",
            "train.chunk_size=null",
        ],
    )
    assert config.train.iterations == 10
    assert config.train.outer_lr == pytest.approx(1e-4)
    assert config.model.hidden == (8, 8)
    assert config.train.chunk_size is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.iteratoins=5"], "unknown config key 'train.iteratoins'"),
        (["optimiser.lr=1"], "unknown config key 'optimiser'"),
        (["train.iterations=ten"], "train.iterations = 'ten' must be of type int"),
        (["train.iterations=2.5"], "must be of type int"),
        (["algorithm.inner_lr=fast"], "algorithm.inner_lr = 'fast' must be a number"),
        (["algorithm.first_order=yes please"], "must be of type bool"),
        (["algorithm.name=mamal"], "choose one of: maml, reptile, pretrain"),
        (["train.meta_batch_size=0"], "train.meta_batch_size = 0 must be > 0"),
        (["algorithm.inner_lr=-0.1"], "algorithm.inner_lr = -0.1 must be > 0"),
        (["algorithm.inner_steps=-1"], "algorithm.inner_steps = -1 must be >= 0"),
        (["model.hidden=40"], "model.hidden = 40 must be a list"),
        (["train.iterations"], "not of the form key=value"),
        (["algorithm.name=reptile", "algorithm.first_order=true"], "only applies to maml"),
    ],
)
def test_bad_values_are_rejected_with_the_field_and_the_rule(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config("maml-sinusoid-5shot", overrides)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(
        ConfigError, match=r"unknown preset 'maml-sinusoid-3shot'.*maml-sinusoid-5shot"
    ):
        load_config("maml-sinusoid-3shot")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_fingerprint_changes_with_any_field():
    assert Config().fingerprint() == config_from_dict({}).fingerprint()
    assert Config().fingerprint() != config_from_dict({"train": {"seed": 1}}).fingerprint()
