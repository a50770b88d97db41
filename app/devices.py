"""Device names (auto, cpu, cuda, cuda:N): checked and resolved here, for the service and trainer.

The one place that knows the syntax. It imports torch only, so the trainer (training/) uses it
too without pulling in the service: app/ never imports training/, and training/ may import this.
"""

from __future__ import annotations

from typing import Final

import torch

DEVICE_HELP: Final = "auto (CUDA when present), cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device name we do not accept, or CUDA asked for where there is none."""


def check_device_name(name: str) -> str:
    """The name itself when it is auto, cpu, cuda or cuda:N; DeviceError otherwise."""
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise DeviceError(f"expected {DEVICE_HELP}, got {name!r}")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch.device for a checked name: auto is CUDA when present, else the CPU.

    A bare "cuda" (or auto on a CUDA machine) is `cuda:<local_rank>` where a launcher such as
    torchrun gave each process its own GPU, else torch's current CUDA device.
    """
    name = check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name}: CUDA is not available on this machine; use cpu")
    if name == "cuda" and local_rank is not None:
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)
