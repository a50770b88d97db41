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


def exact_fp32_on_cuda() -> None:
    """fp32 on CUDA means fp32 for inference: no TF32, and no TorchScript fuser on the GPU.

    Process-wide switches that only CUDA kernels read (the CPU's answers are untouched); called
    by the service's load_model and by `python -m training.evaluate` on a CUDA device. Training
    keeps torch's defaults (it runs under bf16 autocast anyway).

    - TF32: cuDNN convolutions run in TF32 (a 10-bit mantissa) by default on Ampere and later.
      The shipped model has (image, number) pairs whose two best sum logits differ by less than
      0.001, and TF32 (emulated on the CPU) flips such an answer: "the same answers as the CPU"
      would then be false. The model is small enough that full fp32 costs little; the GPU check
      (scripts/gpu_check.sh) measures what the service runs.
    - The fuser: TorchScript's NNC fuser would compile this graph's elementwise ops with NVRTC
      at run time, again for new input shapes, while the service forms every batch size from 1
      to batch_max_size; a compile failure would fail requests, frozen graphs have a history of
      fuser bugs, and what it could fuse here (a ReLU after each cuDNN convolution, with
      BatchNorm already folded in by freezing, and the heads' few small ops) is little. Off, the
      GPU runs the same cuDNN/cuBLAS and ATen kernels at every batch size.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch._C._jit_override_can_fuse_on_gpu(False)
