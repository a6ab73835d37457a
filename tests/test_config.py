"""Config validation: every error names the key, the allowed keys, a suggestion and the source."""

from __future__ import annotations

import pytest
import yaml

from ndkd.config import apply_overrides, config_from_dict, dump_config, load_config, parse_override, variant_config
from ndkd.errors import ConfigError


def write(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_recipe_loads_into_typed_objects(tmp_path, tiny_dict):
    config = load_config(write(tmp_path, tiny_dict), ["train.epochs=5", "distill.nd.weight=2", "train.lr=1e-2"])
    assert config.train.epochs == 5 and isinstance(config.train.epochs, int)
    assert config.distill.nd.weight == 2.0 and isinstance(config.distill.nd.weight, float)
    assert config.train.lr == 0.01
    assert config.distill.options == {"temperature": 4.0, "logit_projector": False}  # validated, defaults filled in
    assert config.teacher.train.epochs == 1


def test_unknown_key_names_key_allowed_keys_suggestion_and_file(tmp_path, tiny_dict):
    tiny_dict["train"]["epoch"] = 3
    path = write(tmp_path, tiny_dict)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unknown key 'train.epoch'. Did you mean 'epochs'?")
    assert "Allowed keys in 'train': epochs, lr, momentum, nesterov, weight_decay, milestones, lr_decay, log_interval" in message


def test_unknown_top_level_section(tmp_path, tiny_dict):
    tiny_dict["trian"] = {}
    with pytest.raises(ConfigError, match=r"unknown key 'trian'\. Did you mean 'train'\? Allowed keys at the top level: name, "):
        load_config(write(tmp_path, tiny_dict))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("train.epochs", "five", "'train.epochs' must be an integer, got 'five' (str)"),
        ("train.epochs", 2.5, "'train.epochs' must be an integer, got 2.5 (float)"),
        ("train.nesterov", "yes please", "'train.nesterov' must be true or false, got 'yes please' (str)"),
        ("train.lr", "fast", "'train.lr' must be a number, got 'fast' (str)"),
        ("train.milestones", 5, "'train.milestones' must be a list, got 5 (int)"),
        ("data.dataset", "fashion-mnist", "'data.dataset' must be one of fashion_mnist, cifar10, cifar100, synthetic, imagefolder; got 'fashion-mnist'. Did you mean 'fashion_mnist'?"),
        ("train.epochs", 0, "'train.epochs' must be at least 1, got 0"),
        ("train.milestones", [3, 2], "'train.milestones' must be strictly increasing epochs, got [3, 2]"),
    ],
)
def test_wrong_types_and_values_are_rejected(tmp_path, tiny_dict, key, value, expected):
    section, field = key.split(".")
    tiny_dict[section][field] = value
    path = write(tmp_path, tiny_dict)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {expected}"


def test_override_errors_name_the_override(tmp_path, tiny_dict):
    path = write(tmp_path, tiny_dict)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["train.epohcs=5"])
    assert str(caught.value).startswith("override 'train.epohcs=5': unknown key 'train.epohcs'. Did you mean 'epochs'?")
    with pytest.raises(ConfigError, match=r"^override 'train.epochs=abc': 'train.epochs' must be an integer"):
        load_config(path, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match=r"must look like section.key=value"):
        load_config(path, ["train.epochs"])


def test_method_options_are_checked_against_the_method(tmp_path, tiny_dict):
    tiny_dict["distill"]["options"] = {"temprature": 2}
    path = write(tmp_path, tiny_dict)
    with pytest.raises(ConfigError, match=r"unknown key 'distill.options.temprature'\. Did you mean 'temperature'\?"):
        load_config(path)
    tiny_dict["distill"] = {"method": "kdd"}
    with pytest.raises(ConfigError, match=r"unknown distillation method 'kdd'\. Did you mean 'kd'\?"):
        load_config(write(tmp_path, tiny_dict))


def test_students_are_validated_up_front(tmp_path, tiny_dict):
    tiny_dict["students"] = [{"name": "ok"}, {"name": "bad", "distill": {"nd": {"wieght": 1}}}]
    with pytest.raises(ConfigError, match=r"unknown key 'distill.nd.wieght'\. Did you mean 'weight'\?.*\(in students\[1\], 'bad'\)"):
        load_config(write(tmp_path, tiny_dict))
    tiny_dict["students"] = [{"name": "a"}, {"name": "a"}]
    with pytest.raises(ConfigError, match=r"students\[1\].name 'a' is used twice"):
        load_config(write(tmp_path, tiny_dict))


def test_variant_overrides_merge_over_the_base(tiny_dict):
    tiny_dict["students"] = [{"name": "ce", "distill": {"method": "none"}}, {"name": "kdpp", "distill": {"nd": {"weight": 2.0}}}]
    config = config_from_dict(tiny_dict)
    ce = variant_config(config, "ce")
    assert ce.distill.method == "none" and ce.distill.options == {}
    kdpp = variant_config(config, "kdpp")
    assert kdpp.distill.method == "kd" and kdpp.distill.nd.weight == 2.0 and kdpp.distill.options == {"temperature": 4.0, "logit_projector": False}
    assert kdpp.train == config.train


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_float_without_dot_and_resolved_dump_round_trip(tmp_path, tiny_dict):
    tiny_dict["train"]["weight_decay"] = "5e-4"  # what PyYAML produces for `5e-4`
    config = config_from_dict(tiny_dict)
    assert config.train.weight_decay == 5e-4
    again = load_config(write(tmp_path, yaml.safe_load(dump_config(config)), "resolved.yaml"))
    assert again == config


def test_parse_override_values_are_yaml():
    assert parse_override("train.milestones=[1, 2]") == (["train", "milestones"], [1, 2])
    assert parse_override("teacher.checkpoint=null") == (["teacher", "checkpoint"], None)
    data = {"train": {"epochs": 1}}
    apply_overrides(data, ["train.epochs=7", "distill.nd.weight=0.5"])
    assert data == {"train": {"epochs": 7}, "distill": {"nd": {"weight": 0.5}}}
