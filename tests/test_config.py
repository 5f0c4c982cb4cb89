"""The config system: experiment loading, variants, overrides and their types, JSON round trip."""
import json

import ml_collections
import pytest

from lmjax import config as config_lib, validation
from lmjax.config import ConfigError
from tests import helpers


def test_baby_experiment_has_nanogpt_cpu_shapes():
    cfg = config_lib.load_config(helpers.EXPERIMENT)
    m, t = cfg.model, cfg.train
    assert (m.num_layers, m.num_heads, m.d_model, m.d_ff) == (4, 4, 128, 512)
    assert (t.seq_len, t.batch_size, t.steps, m.vocab_size) == (64, 12, 2000, 65)
    validation.validate(cfg, num_devices=1)


def test_default_variant_loads_with_documented_shapes():
    cfg = config_lib.load_config(helpers.EXPERIMENT + ":size=default")
    m, t = cfg.model, cfg.train
    assert (m.num_layers, m.num_heads, m.d_model, m.d_ff) == (6, 6, 384, 1536)
    assert (t.seq_len, m.max_seq_len, t.batch_size, t.steps) == (256, 256, 64, 5000)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps) == (1e-3, 1e-4, 100)
    # The batch of 64 runs as 8 microbatches, which still split over 8 data devices.
    assert (cfg.optim.grad_accum_steps, m.remat_policy) == (8, "dots_saveable")
    validation.validate(cfg, num_devices=1)
    validation.validate(cfg, num_devices=8)


def test_unknown_variant_is_a_config_error():
    with pytest.raises(ConfigError, match="size=huge"):
        config_lib.load_config(helpers.EXPERIMENT + ":size=huge")


def test_split_overrides_both_spellings():
    overrides, rest = config_lib.split_overrides(
        ["--config.model.d_model=64", "--workdir=w", "--config.train.steps", "7", "x"])
    assert overrides == {"model.d_model": "64", "train.steps": "7"}
    assert rest == ["--workdir=w", "x"]
    with pytest.raises(ConfigError, match="missing value"):
        config_lib.split_overrides(["--config.train.steps"])


@pytest.mark.parametrize("field,text,expected", [
    ("model.d_model", "64", 64),
    ("train.steps", "1e3", 1000),
    ("optim.lr", "3e-4", 3e-4),
    ("optim.lr", "1", 1.0),
    ("model.scan_layers", "true", True),
    ("model.use_bias", "0", False),
    ("model.attention", "blockwise", "blockwise"),
    ("mesh.rules", "(('batch', 'data'),)", (("batch", "data"),)),
])
def test_override_values_parse_to_the_field_type(field, text, expected):
    cfg = config_lib.apply_overrides(config_lib.base_config(), {field: text})
    group, leaf = field.split(".")
    value = cfg[group][leaf]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("field,value", [
    ("train.steps", "1.5"), ("train.steps", "ten"), ("model.scan_layers", "maybe"),
    ("optim.lr", "fast"), ("train.steps", True),
])
def test_override_of_the_wrong_type_names_field_and_type(field, value):
    with pytest.raises(ConfigError) as err:
        config_lib.apply_overrides(config_lib.base_config(), {field: value})
    message = str(err.value)
    assert field in message and str(value) in message and "expected a value of type" in message


@pytest.mark.parametrize("field", ["model.d_modle", "modle.d_model", "train.steps.x"])
def test_unknown_override_field(field):
    with pytest.raises(ConfigError, match="unknown config field"):
        config_lib.apply_overrides(config_lib.base_config(), {field: "1"})


def test_override_of_a_group_is_rejected():
    with pytest.raises(ConfigError, match="group of fields"):
        config_lib.apply_overrides(config_lib.base_config(), {"model": "1"})


def test_experiment_with_an_unknown_field_is_rejected(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("from lmjax.config import base_config\n"
                    "def get_config(arg=None):\n"
                    "    c = base_config()\n"
                    "    c.model.dmodel = 3\n"
                    "    return c\n")
    with pytest.raises(ConfigError, match="'model.dmodel'"):
        config_lib.load_config(str(path))


def test_json_round_trip_restores_every_field():
    cfg = helpers.tiny_config({"model.positions": "rope", "optim.lr": 3e-4,
                               "mesh.rules": (("batch", ("data", "fsdp")), ("vocab", None))})
    saved = json.loads(json.dumps(cfg.to_dict()))  # tuples become lists, as in config.json
    restored = config_lib.from_dict(saved)
    assert isinstance(restored, ml_collections.ConfigDict)
    assert restored.to_dict() == cfg.to_dict()
