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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.seed=-1"], "train.seed = -1 must be between 0 and 2**63 - 1"),
        ([f"train.seed={2**70}"], f"train.seed = {2**70} must be between"),
        (["task.image_size=100000"], "task.image_size = 100000 is above 512"),
        (["train.outer_lr=.inf"], "train.outer_lr = inf must be a finite number"),
        (["algorithm.inner_lr=.nan"], "algorithm.inner_lr = nan must be a finite number"),
        (["train.time_budget=1e400"], "train.time_budget = inf must be a finite number"),
        (["model.hidden=[]"], "model.hidden = [] leaves the mlp without hidden layers"),
        (["name=../../x"], "name = '../../x' must be a plain name"),
        (["name=.hidden"], "must be a plain name"),
        (["train.iteratons=5"], "(did you mean 'train.iterations'?)"),
    ],
)
def test_values_that_would_fail_later_are_refused_now(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config("maml-sinusoid-5shot", overrides)
    assert message in str(error.value)


def test_a_mistyped_preset_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'maml-sinusoid-5shot'"):
        load_config("maml-sinusiod-5shot")


def test_binary_files_and_keys_that_are_not_names_are_config_errors(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\xff\xfe\x80 not text")
    with pytest.raises(ConfigError, match="cannot be read as text"):
        load_config(binary)
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("1: a\nfoo: b\n")
    with pytest.raises(ConfigError, match="config key 1 is not a name"):
        load_config(mixed)
