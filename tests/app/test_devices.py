"""Device names: one parser (app/devices.py) for the service's settings and the trainer's flags."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from app.config import Settings
from app.devices import DeviceError, check_device_name, exact_fp32_on_cuda, resolve_device
from training.config import parse_args


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(name: str) -> None:
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:-1", ""])
def test_device_names_refused_by_service_and_trainer(name: str) -> None:
    with pytest.raises(DeviceError):
        check_device_name(name)
    with pytest.raises(ValidationError, match="cuda or cuda:N, got"):
        Settings(device=name)
    with pytest.raises(SystemExit):
        parse_args(["--device", name])


def test_auto_is_the_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bare_cuda_is_the_launchers_gpu() -> None:
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda")


def test_exact_fp32_on_cuda_turns_off_tf32_and_the_gpu_fuser() -> None:
    """The switches are process-wide and need no GPU to read; put back as they were after."""
    before = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch._C._jit_can_fuse_on_gpu(),
        torch._C._jit_can_fuse_on_cpu(),
    )
    try:
        torch.backends.cudnn.allow_tf32 = True
        torch._C._jit_override_can_fuse_on_gpu(True)
        exact_fp32_on_cuda()
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch._C._jit_can_fuse_on_gpu() is False
        assert torch._C._jit_can_fuse_on_cpu() == before[3]  # the CPU's path is untouched
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before[:2]
        torch._C._jit_override_can_fuse_on_gpu(before[2])
