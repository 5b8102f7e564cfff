"""One way to build an object from config: a `_target_` node through Hydra's `instantiate`.

Every swappable part (the loss, the optimizer and its schedule, the segmenter, callbacks, loggers)
is a config group whose options are nodes such as

    _target_: hpa.models.losses.FocalLoss   # any importable class or function, the user's too
    gamma: 2.0

`build(node, key)` checks the node against its target's signature before calling anything (an
option the target does not take, a required one left null), so a wrong key is one line naming
`key.option` and the options there are, before any work; what the target itself refuses
(an InputError it raises) passes through as it is. `option(group, name)` reads hpa's own YAML
of a group option (`configs/loss/focal.yaml`), the one place its defaults live, so that code can
build `loss=focal` as a command line would. A node of an older config or checkpoint, `{name:
focal, ...}` without `_target_`, is read as that group option with the node's values over it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib import resources
from typing import Any

from hpa.errors import InputError

CONFIG_MODULE = "hpa.configs"


def option_names(group: str) -> list[str]:
    """hpa's own options of a config group (its YAML files), sorted."""
    folder = resources.files(CONFIG_MODULE).joinpath(group)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def option(group: str, name: str) -> dict[str, Any]:
    """The node of `configs/GROUP/NAME.yaml`, unresolved (its interpolations kept as text)."""
    from omegaconf import OmegaConf

    names = option_names(group)
    if name not in names:
        raise InputError(f"unknown {group} {name!r}; choose one of {', '.join(names)}")
    text = resources.files(CONFIG_MODULE).joinpath(group, f"{name}.yaml").read_text()
    return OmegaConf.to_container(OmegaConf.create(text), resolve=False)


def build_option(group: str, name: str, **options: Any) -> Any:
    """hpa's option `name` of `group` (configs/GROUP/NAME.yaml) with `options` over its
    defaults, built as `GROUP=NAME GROUP.KEY=VALUE` on a command line builds it."""
    return build({**option(group, name), **options}, group)


def with_target(node: Mapping[str, Any], group: str) -> dict[str, Any]:
    """`node` as a plain dict with a `_target_`: an older `{name: NAME, ...}` node becomes the
    group option NAME with the node's other values over its defaults."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    plain = dict(plain)
    if "_target_" in plain:
        return plain
    if "name" not in plain:
        raise InputError(
            f"{group} config has no _target_; choose one of {', '.join(option_names(group))} "
            f"({group}=NAME) or give your own _target_"
        )
    return {**option(group, plain.pop("name")), **plain}


def build(node: Mapping[str, Any], key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node, **kwargs)` with one-line errors naming `key` (the config
    key of the node, e.g. `loss`): checked against the target's signature first."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        plain = OmegaConf.to_container(OmegaConf.create(dict(node)), resolve=True)
    except OmegaConfBaseException as err:
        raise InputError(f"{key}: {err}".splitlines()[0]) from None
    target = plain.get("_target_")
    if not target:
        raise InputError(f"{key} has no _target_: give the class or function that builds it")
    check_options(_locate(target, key), plain, key, given=kwargs)
    try:
        return instantiate(plain, _convert_="all", **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, InputError):
            raise err.__cause__ from None
        cause = err.__cause__ or err
        raise InputError(f"{key}: {target} refused its options: {cause}") from None


def check_options(
    target: Any, node: Mapping[str, Any], key: str, given: Mapping[str, Any] = ()
) -> None:
    """InputError for an option `target` does not take, or a required one that is null."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let it judge
        return
    options = {k: v for k, v in node.items() if not k.startswith("_")}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(named)) if not takes_any else []
    if unknown:
        raise InputError(
            f"{key}.{unknown[0]} is not an option of {node['_target_']}; "
            f"its options are {', '.join(n for n in named if n != 'self') or 'none'}"
        )
    for name, value in options.items():
        param = params.get(name)
        required = param is not None and param.default is param.empty and name not in given
        if value is None and required:
            raise InputError(f"{key}.{name} is required: set {key}.{name}=...")


def _locate(target: str, key: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as err:  # ImportError, AttributeError, Hydra's own wrapper
        reason = (err.__cause__ or err).__class__.__name__
        raise InputError(
            f"{key}._target_={target} cannot be imported ({reason}): check the name, and that "
            "its module is on PYTHONPATH"
        ) from None
