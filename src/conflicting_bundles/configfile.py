"""Configuration files: one source for every command's settings (YAML or JSON, read safely).

The config dataclasses (TrainConfig, AutotuneConfig, GridConfig, LesionConfig, PruneConfig,
the search's SearchStart/Budget) hold every default. A file holds any subset of their fields;
options given on the command line override the file; what a run resolved is saved in its folder
(config.json of a training run, the ``config`` entry of autotune.json / grid_summary.json /
lesion_summary.json / prune.json / search.json), and each of those files is accepted back::

    values = read_config_file("at.yaml")                  # {"variant": "all", "train": {...}}
    values = read_config_file("runs/at/autotune.json")    # its "config" entry
    check_fields(values, AutotuneConfig, "at.yaml")       # unknown keys: ValueError + a guess
    cfg = AutotuneConfig.from_dict(merge(values, given))   # given overrides, nested dicts merged
    print(to_yaml(cfg.to_dict()))                          # what --print-config shows

Only ``yaml.safe_load`` and ``json.loads`` are used: a file never runs code.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigFileError",
    "check_fields",
    "check_types",
    "field_default",
    "merge",
    "read_config_file",
    "to_yaml",
]

# A results file that embeds the resolved config under this key is accepted as a config file.
EMBEDDED_KEY = "config"


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not fit its config class."""


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping in a YAML (.yaml/.yml) or JSON file; a results file with a ``config`` mapping
    (autotune.json, lesion_summary.json, ...) gives that mapping. ConfigFileError otherwise."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise ConfigFileError(
            f"--config {p} is a directory; pass the file inside it (a training run's "
            "config.json, or autotune.json / grid_summary.json / lesion_summary.json / "
            "prune.json / search.json)."
        )
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigFileError(f"config file {p} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"cannot read config file {p}: {e}.") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if p.suffix == ".json" else "YAML"
        raise ConfigFileError(f"{p} is not valid {kind}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{p} must hold a mapping of config fields (key: value), got a {type(data).__name__}."
        )
    embedded = data.get(EMBEDDED_KEY)
    # No config class has a field named "config": a mapping there is an embedded config.
    return embedded if isinstance(embedded, dict) else data


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_fields(
    values: dict,
    cls: type,
    where: str,
    *,
    nested: dict[str, type] | None = None,
    extra: tuple[str, ...] = (),
    hint: str = "",
) -> None:
    """ConfigFileError for a key that is not a field of dataclass ``cls`` (or of the dataclass
    ``nested[key]`` for a mapping-valued field, e.g. {"train": TrainConfig}); ``extra`` keys
    are allowed besides the fields; ``hint`` ends the message. Numeric and bool fields are
    type-checked (check_types)."""
    valid = [f.name for f in dataclasses.fields(cls)] + list(extra)
    hint = hint or _hint(cls)
    for key in values:
        if key not in valid:
            raise ConfigFileError(
                f"{where}: unknown field {key!r}{_suggest(key, valid)}; valid fields: "
                f"{', '.join(valid)}.{hint}"
            )
    annotations = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    try:
        check_types(values, annotations, where)
    except ValueError as e:
        raise ConfigFileError(str(e)) from None
    for key, sub in (nested or {}).items():
        if values.get(key) is None:
            continue
        if not isinstance(values[key], dict):
            raise ConfigFileError(f"{where}: {key} must be a mapping of {sub.__name__} fields.")
        check_fields(values[key], sub, f"{where} ({key})", hint=_hint(sub))


def _hint(cls: type) -> str:
    if any(f.name == "model_kwargs" for f in dataclasses.fields(cls)):
        return " Model arguments (width, depth, blocks, layers, ...) go under model_kwargs."
    return ""


def _type_error(name: str, annotation: str, v) -> str | None:
    """Why ``v`` does not fit a field annotated ``annotation`` (int / float / bool fields)."""
    kinds = {a.strip() for a in str(annotation).split("|")}
    if v is None and "None" in kinds:
        return None
    number = not isinstance(v, bool) and isinstance(v, (int, float))
    if kinds & {"int", "float"} and not kinds - {"int", "float", "None"}:
        if "float" in kinds and number:
            return None
        if "int" in kinds and number and isinstance(v, int):
            return None
        what = "an integer" if "float" not in kinds else "a number"
        return f"{name} must be {what}, got {v!r}."
    if kinds == {"bool"} and not isinstance(v, bool):
        return f"{name} must be true or false, got {v!r}."
    return None


def check_types(values: dict, annotations: dict[str, str], where: str) -> None:
    """ValueError naming the first value that is not of its field's type (a typo such as
    ``width: five`` or ``train_limit: 1.5`` would only fail deep inside a run)."""
    for k, v in values.items():
        why = _type_error(k, annotations[k], v) if k in annotations else None
        if why:
            raise ValueError(f"{where}: {why}")


def merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` on top; mappings are merged key by key (a file's
    ``model_kwargs`` or ``train`` keeps the keys the command line does not set)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` (default_factory called)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def to_yaml(values: dict) -> str:
    """YAML of a resolved config (tuples as lists, keys in field order) that read_config_file
    reads back to the same values."""
    import yaml

    return yaml.safe_dump(_plain(values), sort_keys=False, default_flow_style=None)
