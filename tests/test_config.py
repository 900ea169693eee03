"""YAML configs with command-line overrides: values parse as YAML, errors name the key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from eoca.config import apply_overrides, deep_merge, load_config, parse_override
from eoca.errors import ConfigError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = 0.01
    layers: list[int] = [64, 32]


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    train: Inner = Inner()


def test_layers_defaults_file_overrides(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: from-file\ntrain:\n  lr: 0.02\n")
    cfg = load_config(Outer, f, ["train.layers=[8, 4]", "name=cli"])
    assert cfg == Outer(name="cli", train=Inner(lr=0.02, layers=[8, 4]))
    assert load_config(Outer) == Outer()


def test_override_parsing() -> None:
    assert parse_override("a.b=0.5") == (["a", "b"], 0.5)
    assert parse_override("models=[esmm, esdpm]") == (["models"], ["esmm", "esdpm"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("lr")
    with pytest.raises(ConfigError, match="is not a dotted name"):
        parse_override("a..b=1")
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_errors_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"defaults \+ overrides: train.lr: Input should be a valid number"):
        load_config(Outer, None, ["train.lr=fast"])
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  dropout: 0.3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.dropout: Extra inputs are not permitted"):
        load_config(Outer, f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Outer, f)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_deep_merge_keeps_unrelated_keys() -> None:
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}, "b": 1}
