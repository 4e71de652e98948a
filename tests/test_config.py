"""Config loading: _BASE_ chains, overrides, schema validation, save round trip, registry."""

import os
import re

import pytest
import yaml

from ppflux_lightning.config import Config, Registry, load_config, merge, parse_value, save_config, validate
from ppflux_lightning.utils.errors import ConfigError

SCHEMA = {
    "model": {"pretrained": "", "lora": {"rank": 32, "targets": ["attn.to_q"]}},
    "data": {"type": "folder", "path": "", "resolution": 1024},
    "train": {"max_steps": 100, "lr": 5e-6, "seed": 0, "amp": False, "resume": None},
    "extra": {},
}


def write(folder, name, data):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_base_chain_relative_paths_later_bases_win_lists_replaced(tmp_path):
    d = str(tmp_path)
    write(d, "bases/a.yaml", {"model": {"lora": {"rank": 4, "targets": ["x", "y"]}}, "train": {"max_steps": 1}})
    write(d, "bases/b.yaml", {"_BASE_": ["a.yaml"], "train": {"max_steps": 2, "seed": 7}})
    write(d, "bases/c.yaml", {"train": {"max_steps": 3}, "model": {"lora": {"targets": ["z"]}}})
    top = write(d, "exp/top.yaml", {"_BASE_": ["../bases/b.yaml", "../bases/c.yaml"], "data": {"path": "/p"}})
    cfg = load_config(top, schema=SCHEMA)
    assert cfg.train.max_steps == 3  # c is listed after b
    assert cfg.train.seed == 7  # from b, untouched by c
    assert cfg.model.lora.rank == 4  # from a through b, deep-merged with c's lora section
    assert cfg.model.lora.targets == ["z"]  # lists replace, never concatenate
    assert cfg.data.path == "/p" and cfg.data.resolution == 1024  # default filled in
    assert cfg["train"]["lr"] == 5e-6 and isinstance(cfg.train, Config)


def test_including_file_wins_over_its_bases(tmp_path):
    d = str(tmp_path)
    write(d, "base.yaml", {"train": {"max_steps": 1, "seed": 3}})
    top = write(d, "top.yaml", {"_BASE_": "base.yaml", "train": {"max_steps": 9}})
    cfg = load_config(top)
    assert cfg.train.max_steps == 9 and cfg.train.seed == 3


def test_overrides_are_parsed_as_yaml(tmp_path):
    top = write(str(tmp_path), "top.yaml", {"train": {"max_steps": 1}})
    cfg = load_config(top, ["train.max_steps=10", "model.pretrained=/x", "train.lr=1e-5", "train.amp=true",
                            "model.lora.targets=[a, b]", "train.resume=null"], schema=SCHEMA)
    assert cfg.train.max_steps == 10 and isinstance(cfg.train.max_steps, int)
    assert cfg.model.pretrained == "/x"
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.amp is True
    assert cfg.model.lora.targets == ["a", "b"]
    assert cfg.train.resume is None


def test_scientific_float_in_yaml_file_is_a_float(tmp_path):
    top = write(str(tmp_path), "top.yaml", "train:\n  lr: 1e-5\n  max_steps: 5\n")
    cfg = load_config(top, schema=SCHEMA)
    assert cfg.train.lr == 1e-5
    assert parse_value("3") == 3 and parse_value("2e3") == 2000.0 and parse_value("abc") == "abc"
    assert parse_value("-.5") == -0.5 and parse_value("+.25") == 0.25 and parse_value(".5e-2") == 0.005


def test_unknown_key_names_closest_valid_key(tmp_path):
    top = write(str(tmp_path), "top.yaml", {"train": {"max_step": 5}})
    with pytest.raises(ConfigError, match=r"'train\.max_step'.*did you mean 'train\.max_steps'"):
        load_config(top, schema=SCHEMA)
    with pytest.raises(ConfigError, match=r"'data\.resolutoin'.*'data\.resolution'"):
        load_config(write(str(tmp_path), "ok.yaml", {}), ["data.resolutoin=512"], schema=SCHEMA)
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'.*'train'"):
        validate({"trian": {}}, SCHEMA)


def test_wrong_types_name_key_and_value():
    with pytest.raises(ConfigError, match=r"'train\.max_steps' must be a int, got 'ten'"):
        validate({"train": {"max_steps": "ten"}}, SCHEMA)
    with pytest.raises(ConfigError, match=r"'train\.amp' must be a bool, got 1"):
        validate({"train": {"amp": 1}}, SCHEMA)
    with pytest.raises(ConfigError, match=r"'train\.max_steps' must be a int, got True"):
        validate({"train": {"max_steps": True}}, SCHEMA)
    with pytest.raises(ConfigError, match=r"'model\.lora\.targets' must be a list"):
        validate({"model": {"lora": {"targets": "attn"}}}, SCHEMA)
    with pytest.raises(ConfigError, match=r"'data' must be a section"):
        validate({"data": 3}, SCHEMA)
    cfg = validate({"train": {"lr": 1, "resume": "latest"}, "extra": {"anything": [1]}}, SCHEMA)
    assert isinstance(cfg.train.lr, float) and cfg.train.resume == "latest" and cfg.extra.anything == [1]


def test_base_cycle_detected(tmp_path):
    d = str(tmp_path)
    write(d, "a.yaml", {"_BASE_": ["b.yaml"]})
    write(d, "b.yaml", {"_BASE_": ["a.yaml"]})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(os.path.join(d, "a.yaml"))
    write(d, "self.yaml", {"_BASE_": ["self.yaml"]})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(os.path.join(d, "self.yaml"))


def test_diamond_bases_are_not_a_cycle(tmp_path):
    d = str(tmp_path)
    write(d, "root.yaml", {"train": {"seed": 1}})
    write(d, "l.yaml", {"_BASE_": ["root.yaml"], "train": {"max_steps": 2}})
    write(d, "r.yaml", {"_BASE_": ["root.yaml"], "train": {"lr": 0.5}})
    cfg = load_config(write(d, "top.yaml", {"_BASE_": ["l.yaml", "r.yaml"]}))
    assert cfg.train == {"seed": 1, "max_steps": 2, "lr": 0.5}


def test_missing_files_and_bad_overrides(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    top = write(str(tmp_path), "top.yaml", {"_BASE_": ["gone.yaml"]})
    with pytest.raises(FileNotFoundError, match="gone.yaml"):
        load_config(top)
    ok = write(str(tmp_path), "ok.yaml", {"train": {"max_steps": 1}})
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(ok, ["train.max_steps"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(ok, ["train.max_steps.x=1"])


def test_save_config_round_trip(tmp_path):
    cfg = validate({"train": {"max_steps": 4}, "model": {"pretrained": "/m"}}, SCHEMA)
    path = str(tmp_path / "out" / "config.yaml")
    save_config(cfg, path)
    again = load_config(path, schema=SCHEMA)
    assert again == cfg
    assert [f for f in os.listdir(tmp_path / "out")] == ["config.yaml"]  # no temp file left behind


def test_merge_does_not_mutate_inputs():
    a = {"x": {"y": [1]}}
    b = {"x": {"z": 2}}
    out = merge(a, b)
    out["x"]["y"].append(5)
    assert a == {"x": {"y": [1]}} and out == {"x": {"y": [1, 5], "z": 2}}


def test_registry_build_and_errors():
    reg = Registry("widgets")

    @reg.register
    class Box:
        def __init__(self, size, color="red"):
            self.size, self.color = size, color

    @reg.register(name="tin")
    class Can:
        def __init__(self):
            pass

    box = reg.build({"type": "Box", "size": 3}, color="blue")
    assert (box.size, box.color) == (3, "blue")
    assert isinstance(reg.build(Config(type="tin")), Can)
    assert reg.names() == ["Box", "tin"] and "tin" in reg
    with pytest.raises(ConfigError, match=r"unknown widgets type 'Bx'.*did you mean 'Box'"):
        reg.build({"type": "Bx"})
    with pytest.raises(ConfigError, match="needs a 'type' key"):
        reg.build({"size": 1})
    with pytest.raises(ConfigError, match="weight"):
        reg.build({"type": "Box", "size": 1, "weight": 2})
    with pytest.raises(KeyError, match="already registered"):
        reg.register(Box)


def test_every_shipped_config_passes_the_range_checks_and_nonsense_is_named():
    import glob

    from ppflux_lightning.engine.ranges import check_ranges
    from ppflux_lightning.engine.schema import DEFAULTS

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    assert paths
    for path in paths:
        check_ranges(load_config(path, schema=DEFAULTS))
    base = os.path.join(root, "flux_lightning_tiny.yaml")
    for override, message in (("train.lr=.nan", "'train.lr' must be a finite number, got nan"),
                              ("train.max_steps=0", "'train.max_steps' must be >= 1, got 0"),
                              ("train.seed=4294967296", "'train.seed' must be <= 4294967295"),
                              ("objectives.reflow.weight=-0.5", "'objectives.reflow.weight' must be >= 0"),
                              ("train.betas=[0.9]", "'train.betas' must be two numbers"),
                              ("train.min_lr_ratio=2", "'train.min_lr_ratio' must be <= 1")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_ranges(load_config(base, [override], schema=DEFAULTS))
