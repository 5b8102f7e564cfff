"""Every default in one place, the YAML: a class that configs build may carry a default for a
configured key only when it equals the YAML's (hpa.build reads hpa's own group options)."""

from __future__ import annotations

import inspect
from importlib import resources

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from hpa.build import option, option_names
from hpa.data.datamodule import HPADataModule

CONFIGS = resources.files("hpa.configs")

# The groups whose options are `_target_` nodes hpa builds (torch's optimizers are not ours: their
# defaults are torch's, and the YAML sets what hpa uses).
TARGET_GROUPS = ["loss", "scheduler", "segmenter"]


def own_keys(path: str) -> dict:
    """The keys a YAML file sets itself (its `defaults:` list left out), unresolved."""
    node = OmegaConf.create(CONFIGS.joinpath(path).read_text())
    return {
        k: v
        for k, v in OmegaConf.to_container(node, resolve=False).items()
        if k != "defaults" and not k.startswith("_")
    }


def disagreements(target, keys: dict) -> list[str]:
    params = inspect.signature(target).parameters
    found = []
    for key, value in keys.items():
        param = params.get(key)
        if param is None or param.default is param.empty:
            continue
        default = param.default
        if isinstance(value, list) and isinstance(default, tuple):
            default = list(default)
        if isinstance(value, str) and "${" in value:
            found.append(f"{key}: the YAML interpolates, the class defaults to {default!r}")
        elif value != default:
            found.append(f"{key}: YAML {value!r}, class {default!r}")
    return found


@pytest.mark.parametrize("group, name", [(g, n) for g in TARGET_GROUPS for n in option_names(g)])
def test_each_target_default_equals_its_yaml_and_takes_every_key(group, name):
    node = option(group, name)
    target = get_object(node["_target_"])
    keys = {k: v for k, v in node.items() if not k.startswith("_")}
    params = inspect.signature(target).parameters
    assert set(keys) <= set(params), f"{group}/{name}.yaml sets keys its target does not take"
    assert disagreements(target, keys) == []


@pytest.mark.parametrize("path", ["data/default.yaml", "data/cells.yaml"])
def test_data_module_defaults_equal_the_data_yaml(path, tiny_dataset):
    """default.yaml for every key it sets; cells.yaml for the keys of cell crops it adds (`level`
    is each file's kind; demo.yaml, bags.yaml, merged.yaml and experiments change values on
    purpose). `augment` and `negative_aug` default to None, which takes default.yaml's."""
    keys = own_keys(path)
    if path != "data/default.yaml":
        base = own_keys("data/default.yaml") | own_keys("data/demo.yaml") | {"level": None}
        keys = {k: v for k, v in keys.items() if k not in base}
    from_yaml = {k: keys.pop(k) for k in ("augment", "negative_aug") if k in keys}
    assert disagreements(HPADataModule.__init__, keys) == []
    dm = HPADataModule(str(tiny_dataset), image_size=32, batch_size=2)
    for key, value in from_yaml.items():
        assert getattr(dm, key) == value or dm.negative_aug is None and value["p"] == 0, key


def test_the_check_fails_on_a_default_that_differs():
    def made_up(work_size: int = 256, min_cell: float = 0.5):
        pass

    assert disagreements(made_up, {"work_size": 512, "min_cell": 0.5}) == [
        "work_size: YAML 512, class 256"
    ]
