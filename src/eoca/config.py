"""YAML configuration with command-line overrides, validated by pydantic: one mechanism for every command.

A config is loaded in three layers: the model's defaults, then a YAML file, then ``key.path=value`` overrides
from the command line (values parsed as YAML, so ``lr=0.02``, ``models=[esmm,esdpm]`` and ``name=abc`` all
work). Every error names the file and the key at fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from eoca.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def packaged_config(name: str) -> Path:
    """Path of a configuration file shipped inside the package, ``eoca/configs/<name>`` (e.g. ``run.yaml``).

    The one place that knows where packaged defaults live, so an installed wheel and a source checkout agree.
    """
    return Path(str(resources.files("eoca").joinpath("configs", name)))


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse YAML text that must be a mapping (empty text is an empty mapping); errors name ``source``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level, got {type(raw).__name__}")
    return raw


def read_yaml(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping from a file: the one YAML reader of the package (configs, specs, plans).

    ``what`` names the kind of file in errors (``config file``, ``delivery plan``...).
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; expected a YAML {what}")
    if not p.exists():
        raise ConfigError(f"{p}: {what} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the {what}: {exc}") from exc
    return parse_yaml(text, str(p))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. train.lr=0.02")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': the key '{key}' is not a dotted name like train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {exc}") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` override set (nested mappings created)."""
    out: dict[str, Any] = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Render pydantic errors as ``source: key.path: message`` lines, so the user sees which key is wrong."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def validate_config(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """Validate ``data`` against ``model``; errors list ``source: key.path: message``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        text = format_validation_error(exc, source).replace("\n", "\n  ")
        raise ConfigError("invalid configuration:\n  " + text) from exc


def load_config(
    model: type[M],
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> M:
    """Defaults of ``model`` <- ``base`` <- YAML file ``path`` <- ``overrides``; validated."""
    data: dict[str, Any] = _deep_copy(base or {})
    source = "defaults"
    if path is not None:
        data = deep_merge(data, read_yaml(path))
        source = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + overrides"
    return validate_config(model, data, source)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, everything else in ``update`` replaces ``base``."""
    out = _deep_copy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
