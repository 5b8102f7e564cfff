"""Can this torch run on the GPU it sees? And the device a command should use.

A torch wheel carries GPU code for a list of architectures (`torch.cuda.get_arch_list()`, e.g.
sm_75 ... sm_120 for Kaggle's cu128 build). On an older card, such as the Tesla P100 (sm_60)
Kaggle still hands out, `torch.cuda.is_available()` says True and the first kernel launch fails
deep inside prediction with "no kernel image is available for execution on the device". This
module says so up front: `cuda_arch_problem()` (also called by `python -m hpa.doctor`) and
`choose_device()` (hpa.predict's `device=` option). torch is imported inside the functions only.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from hpa.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FIX = "pick GPU T4 or L4 in the notebook's Settings > Accelerator, or run on the CPU (device=cpu)"
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_ARCH = re.compile(r"^(sm|compute)_(\d+)[a-z]?$")


def runs_on(arch_list: list[str], capability: tuple[int, int]) -> bool:
    """Whether code built for `arch_list` runs on a GPU of `capability` (major, minor).

    A cubin for sm_XY runs on the same major version with minor >= Y; PTX (compute_XY) is
    compiled at load time for any GPU of capability >= X.Y.
    """
    for arch in arch_list:
        match = _ARCH.match(arch)
        if not match:
            continue
        major, minor = divmod(int(match[2]), 10)
        if match[1] == "sm" and major == capability[0] and minor <= capability[1]:
            return True
        if match[1] == "compute" and (major, minor) <= capability:
            return True
    return False


def cuda_arch_problem(index: int | None = None) -> str | None:
    """One line naming the GPU, its capability and the fix when this torch cannot run on it
    (GPU `index`, or the first such of every visible GPU); None when it can, when no GPU is
    visible, or when the build lists no architectures."""
    import torch

    if not torch.cuda.is_available():
        return None
    arch_list = list(torch.cuda.get_arch_list())
    if not arch_list:
        return None
    for i in range(torch.cuda.device_count()) if index is None else [index]:
        major, minor = torch.cuda.get_device_capability(i)
        if runs_on(arch_list, (major, minor)):
            continue
        name = torch.cuda.get_device_name(i)
        built = " ".join(a for a in arch_list if a.startswith("sm_")) or " ".join(arch_list)
        return (
            f"GPU {i} ({name}) has compute capability {major}.{minor} (sm_{major}{minor}), which "
            f"this torch {torch.__version__} cannot run (it is built for {built}); {FIX}"
        )
    return None


def choose_device(device: str) -> torch.device:
    """The device for `device=`: auto (the GPU when this torch runs on it, else the CPU with a
    warning), cuda or cuda:N (stop with one line when there is none or torch cannot run on it),
    cpu."""
    import torch

    if not isinstance(device, str) or not DEVICE.match(device):
        raise InputError(f"device={device!r} is not valid: use auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if device == "auto":
            return torch.device("cpu")
        raise InputError(f"device={device}: no CUDA GPU is visible; use device=auto or cpu")
    index = int(device.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise InputError(
            f"device={device}: there are {torch.cuda.device_count()} GPUs (cuda:0 ...); pick one"
        )
    problem = cuda_arch_problem(index)
    if problem is None:
        return torch.device("cuda", index)
    if device != "auto":
        raise InputError(f"device={device}: {problem}")
    log.warning("%s; running on the CPU instead (device=auto)", problem)
    return torch.device("cpu")


__all__ = ["FIX", "choose_device", "cuda_arch_problem", "runs_on"]
