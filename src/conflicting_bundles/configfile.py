"""Configuration files: one source for every command's settings (YAML or JSON, read safely).

The config dataclasses (TrainConfig, AutotuneConfig, GridConfig, LesionConfig, PruneConfig,
the search's SearchStart/Budget) hold every default. A file holds any subset of their fields;
options given on the command line override the file; what a run resolved is saved in its folder
(config.json of a training run, the ``config`` entry of autotune.json / grid_summary.json /
lesion_summary.json / prune.json / search.json), and each of those files is accepted back::

    values = read_config_file("at.yaml")                  # {"variant": "all", "train": {...}}
    values = read_config_file("runs/at/autotune.json")    # its "config" entry
    values = check_fields(values, AutotuneConfig, "at.yaml")  # types checked; unknown: a guess
    cfg = AutotuneConfig.from_dict(merge(values, given))   # given overrides, nested dicts merged
    print(to_yaml(cfg.to_dict()))                          # what --print-config shows

Only ``yaml.safe_load`` and ``json.loads`` are used: a file never runs code.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from pathlib import Path
from typing import Any

from .safefile import (
    MAX_CONFIG_BYTES,
    UnsafeFileError,
    check_nesting,
    json_loads_strict,
    read_bounded,
)

__all__ = [
    "ConfigFileError",
    "check_fields",
    "check_types",
    "command_line_only",
    "field_default",
    "merge",
    "read_config_file",
    "to_yaml",
]

# A results file that embeds the resolved config under this key is accepted as a config file.
EMBEDDED_KEY = "config"


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not fit its config class."""


MAX_VALUES = 10_000  # a config has ~100 fields; more means YAML aliases expanding (a bomb)
# dataclass field metadata key: the field may be set only by the command line or Python (it
# chooses code to run: an opt-in to unpickle, a factory path to import); its value says why
# (check_fields puts it in the refusal). COMMAND_LINE_ONLY_WHEN, if there, is a predicate on
# the file's value: only values for which it is true are refused (model: "fnn" is fine,
# model: "pkg.module:function" is not); without it every truthy value is refused.
COMMAND_LINE_ONLY = "command_line_only"
COMMAND_LINE_ONLY_WHEN = "command_line_only_when"


def command_line_only(reason: str, when=bool) -> dict:
    """Field metadata: refuse a config file's value ``v`` of this field when ``when(v)``."""
    return {COMMAND_LINE_ONLY: reason, COMMAND_LINE_ONLY_WHEN: when}


def _size_ok(data, limit: int = MAX_VALUES) -> bool:
    """Whether ``data`` holds at most ``limit`` values counted as expanded (YAML aliases share
    objects: a 1.6 KB file can stand for billions of values, or for a cycle)."""
    stack, seen = [data], 0
    while stack:
        x = stack.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return True


def _yaml_load(text: str):
    """yaml.safe_load, refusing a key given twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in keys:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice (lines {keys[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); keep one",
                        key_node.start_mark,
                    )
                keys[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping in a YAML (.yaml/.yml) or JSON file ("-": YAML/JSON from stdin); a results
    file with a ``config`` mapping (autotune.json, lesion_summary.json, ...) gives that mapping.
    ConfigFileError otherwise."""
    import yaml

    p = Path(path)
    if str(path) == "-":
        text = sys.stdin.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigFileError(f"--config - (stdin) holds more than {MAX_CONFIG_BYTES:,} bytes.")
    elif p.is_dir() and not p.is_symlink():
        raise ConfigFileError(
            f"--config {p} is a directory; pass the file inside it (a training run's "
            "config.json, or autotune.json / grid_summary.json / lesion_summary.json / "
            "prune.json / search.json)."
        )
    else:
        try:  # a regular file (no link, FIFO or device) of at most a few MB
            text = read_bounded(p, MAX_CONFIG_BYTES, "config file").decode("utf-8")
        except UnsafeFileError as e:
            raise ConfigFileError(str(e)) from None
        except FileNotFoundError:
            raise ConfigFileError(f"config file {p} does not exist.") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigFileError(f"cannot read config file {p}: {e}.") from None
    kind = "JSON" if p.suffix == ".json" else "YAML"
    try:
        data = json_loads_strict(text) if p.suffix == ".json" else _yaml_load(text)
    except (ValueError, yaml.YAMLError) as e:  # JSONDecodeError is a ValueError
        raise ConfigFileError(f"{p} is not valid {kind}: {e}") from None
    except RecursionError:
        raise ConfigFileError(f"{p} is not valid {kind}: nested too deep to parse") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{p} must hold a mapping of config fields (key: value), got a {type(data).__name__}."
        )
    embedded = data.get(EMBEDDED_KEY)
    # No config class has a field named "config": a mapping there is an embedded config.
    config = embedded if isinstance(embedded, dict) else data
    if not _size_ok(config):  # results files are large; only their config is checked
        raise ConfigFileError(
            f"{p} expands to more than {MAX_VALUES} values (YAML aliases *name repeating "
            "anchors &name, or a cycle); a config file is a small mapping of fields: write "
            "the values out."
        )
    try:  # after the size check: a cycle is reported as one
        check_nesting(data, str(p))
    except UnsafeFileError as e:
        raise ConfigFileError(str(e)) from None
    return config


def _suggest(key: str, valid: list[str], renamed: dict[str, str] | None = None) -> str:
    if renamed and key in renamed:
        return f" (did you mean {renamed[key]!r}?)"
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _placement(key: str, nested: dict[str, type]) -> str:
    """' (it belongs under train:)' when ``key`` is a field of a nested section."""
    for section, sub in nested.items():
        if key in {f.name for f in dataclasses.fields(sub)}:
            return f" ({key} is a {sub.__name__} field: put it under {section}:)"
    return ""


def check_fields(
    values: dict,
    cls: type,
    where: str,
    *,
    nested: dict[str, type] | None = None,
    extra: tuple[str, ...] = (),
    hint: str = "",
    renamed: dict[str, str] | None = None,
) -> dict:
    """``values`` checked against dataclass ``cls``: ConfigFileError for a key that is not one
    of its fields (nor of the dataclass ``nested[key]`` for a mapping-valued field, e.g.
    {"train": TrainConfig}) and for a value that does not fit its field's type; returns the
    values converted (check_types). ``extra`` keys are allowed besides the fields; ``renamed``
    maps old or mistaken names to the field meant ({"blocks": "block_regex"}); ``hint`` ends
    the message. A field whose metadata has COMMAND_LINE_ONLY (an opt-in that lets a file run
    code, a factory path that imports code) is refused when the file sets it to a value its
    COMMAND_LINE_ONLY_WHEN predicate accepts (default: any truthy value): a file handed on must
    not choose code to run."""
    nested = nested or {}
    valid = [f.name for f in dataclasses.fields(cls)] + list(extra)
    hint = hint or _hint(cls)
    for key in values:
        if key not in valid:
            guess = _placement(key, nested) or _suggest(key, valid, renamed)
            raise ConfigFileError(
                f"{where}: unknown field {key!r}{guess}; valid fields: {', '.join(valid)}.{hint}"
            )
    annotations = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    try:
        values = check_types(values, annotations, where)
    except ValueError as e:
        raise ConfigFileError(str(e)) from None
    _refuse_command_line_only(values, cls, where)
    for key, sub in nested.items():
        if values.get(key) is None:
            continue
        if not isinstance(values[key], dict):
            raise ConfigFileError(f"{where}: {key} must be a mapping of {sub.__name__} fields.")
        values[key] = check_fields(values[key], sub, f"{where} ({key})", hint=_hint(sub))
    return values


def _refuse_command_line_only(values: dict, cls: type, where: str) -> None:
    """ConfigFileError for a COMMAND_LINE_ONLY field the file sets (runs after check_types:
    a quoted 'false' is False by now)."""
    for f in dataclasses.fields(cls):
        reason = f.metadata.get(COMMAND_LINE_ONLY)
        if not reason or f.name not in values:
            continue
        when = f.metadata.get(COMMAND_LINE_ONLY_WHEN, bool)
        v = values[f.name]
        try:
            refused = bool(when(v))
        except (TypeError, ValueError, AttributeError):
            refused = True  # a value the predicate cannot judge is not trusted either
        if refused:
            what = "turned on" if when is bool else f"set to {v!r}"
            raise ConfigFileError(
                f"{where}: {f.name} cannot be {what} from a config file: {reason} Remove it "
                f"from the file and pass --{f.name.replace('_', '-')} on the command line if "
                "you mean it."
            )


def _hint(cls: type) -> str:
    if any(f.name == "model_kwargs" for f in dataclasses.fields(cls)):
        return " Model arguments (width, depth, blocks, layers, ...) go under model_kwargs."
    return ""


def check_types(values: dict, annotations: dict[str, str], where: str) -> dict:
    """``values`` with each one checked against (and converted to) its field's annotation
    (configtypes.coerce_value); ValueError "WHERE: FIELD must be ..." for the first that does
    not fit (``width: five`` or ``train_limit: 1.5`` would only fail deep inside a run)."""
    from .configtypes import coerce_value

    out = dict(values)
    for k, v in values.items():
        if k in annotations:
            try:
                out[k] = coerce_value(k, annotations[k], v)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
    return out


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
