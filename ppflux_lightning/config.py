"""YAML configs: `_BASE_` inheritance, `-o a.b=value` overrides, validation against a schema of defaults.

A config is a `Config`: a plain `dict` subclass whose keys also read as attributes (`cfg.train.max_steps` ==
`cfg["train"]["max_steps"]`). Nested sections are `Config` too; `to_dict()` gives plain dicts back.

A schema is a nested dict of defaults owned by the caller (e.g. the trainer's schema). Validation fills missing keys
from it and checks every given key and type against it:
- a dict default is a section: its keys are the only valid ones; an EMPTY dict default is a free-form mapping;
- `None` accepts any value (an optional setting without a fixed type);
- a float default accepts ints (stored as float); bool and int never stand in for each other;
- a list/tuple default accepts a list (tuples are stored as lists); lists replace, never merge.
"""

import copy
import difflib
import inspect
import os
import re

import yaml

from .utils.atomic import atomic_file
from .utils.errors import ConfigError

BASE_KEY = "_BASE_"


class Config(dict):
    """A dict whose keys can also be read and set as attributes; nested dicts become `Config` on wrapping."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if isinstance(value, dict) and not isinstance(value, Config):
                super().__setitem__(key, Config(value))

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __setitem__(self, key, value):
        if isinstance(value, dict) and not isinstance(value, Config):
            value = Config(value)
        super().__setitem__(key, value)

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo))

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` and `-.5` as floats (PyYAML's YAML 1.1 resolver returns them as strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text):
    """Parse one override value as YAML (`10` -> int, `1e-5` -> float, `[1, 2]` -> list, `/x` -> str)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def merge(base, update):
    """Deep-merge `update` into a copy of `base`: dicts merge recursively, anything else (lists too) is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path, stack):
    path = os.path.abspath(path)
    if path in stack:
        chain = " -> ".join(stack[stack.index(path):] + [path])
        raise ConfigError(f"_BASE_ cycle: {chain}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=_Loader)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path!r} must hold a mapping at the top level, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f"{path!r}: _BASE_ must be a file or a list of files, got {bases!r}")
    merged = {}
    for base in bases:  # later bases win; the including file wins over all of them
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged = merge(merged, _read_yaml(base_path, stack + [path]))
    return merge(merged, data)


def parse_override(text):
    """`"a.b=value"` -> (["a", "b"], parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    return parts, parse_value(value)


def apply_overrides(cfg, overrides):
    """Set each `a.b=value` in a copy of `cfg` (a dict), creating sections as needed; validation checks the keys."""
    out = copy.deepcopy(dict(cfg))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i + 1])} is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _type_name(default):
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (list, tuple)):
        return "list"
    return type(default).__name__


def _check_value(key, value, default):
    """Return `value` coerced to the default's type, or raise naming the key and the value."""
    if default is None:
        return value
    want = _type_name(default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"config key {key!r} must be a {want}, got {value!r} ({type(value).__name__})")
    return value


def validate(cfg, schema, prefix=""):
    """Return a `Config` holding `schema`'s defaults updated by `cfg`; unknown keys and wrong types raise."""
    out = {}
    for key, value in cfg.items():
        name = prefix + str(key)
        if key not in schema:
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1, cutoff=0.0)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {name!r}{hint}")
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {name!r} must be a section (mapping), got {value!r}")
            out[key] = copy.deepcopy(value) if not default else validate(value, default, name + ".")
        else:
            out[key] = _check_value(name, value, default)
    for key, default in schema.items():
        if key not in out:
            out[key] = validate({}, default, prefix + key + ".") if isinstance(default, dict) else copy.deepcopy(
                default)
    return Config(out)


def load_config(path, overrides=(), schema=None):
    """Read `path` (resolving `_BASE_`), apply `a.b=value` overrides, validate against `schema` when given."""
    cfg = apply_overrides(_read_yaml(path, []), overrides)
    return validate(cfg, schema) if schema is not None else Config(cfg)


def save_config(cfg, path):
    """Write the resolved config as YAML, atomically."""
    data = cfg.to_dict() if isinstance(cfg, Config) else copy.deepcopy(dict(cfg))
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=False, allow_unicode=True)


class Registry:
    """One explicit registry per kind (PaddleSeg-style): `@REG.register` a class, `REG.build(cfg)` from its `type`."""

    def __init__(self, name):
        self.name = name
        self._items = {}

    def register(self, obj=None, name=None):
        """Use as `@reg.register` or `@reg.register(name="x")`; the name defaults to the class name."""
        if obj is None:
            return lambda o: self.register(o, name)
        key = name or obj.__name__
        if key in self._items:
            raise KeyError(f"{self.name}: {key!r} is already registered")
        self._items[key] = obj
        return obj

    def __contains__(self, key):
        return key in self._items

    def names(self):
        return sorted(self._items)

    def get(self, key):
        if key not in self._items:
            close = difflib.get_close_matches(str(key), self.names(), n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.name} type {key!r} (known: {', '.join(self.names())}){hint}")
        return self._items[key]

    def build(self, cfg, **kwargs):
        """Call the class named by `cfg["type"]` with the other keys of `cfg` (and `kwargs`) as arguments."""
        if "type" not in cfg:
            raise ConfigError(f"{self.name} config needs a 'type' key, got keys {sorted(cfg)}")
        args = {k: v for k, v in cfg.items() if k != "type"}
        args.update(kwargs)
        cls = self.get(cfg["type"])
        try:
            inspect.signature(cls).bind(**args)
        except TypeError as e:
            raise ConfigError(f"{self.name} type {cfg['type']!r}: {e}") from None
        return cls(**args)
