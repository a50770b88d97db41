"""The forward pass on the CPU in ONNX Runtime, made from the TorchScript checkpoint at load.

The checkpoint stays the contract (a TorchScript file with its card). On the CPU the service
exports it to ONNX in memory (torch.onnx, the TorchScript exporter) and runs that graph in one
ONNX Runtime session: the same network and weights, with ONNX Runtime's CPU kernels instead of
TorchScript's interpreter and oneDNN calls, which cost more per call than this small model's
arithmetic (docs/performance.md, "ONNX Runtime on the CPU"). Before it serves, its outputs are
checked against TorchScript's on probe images; DIGITSUM_CPU_ENGINE=torchscript serves the
TorchScript module instead. CUDA always runs TorchScript.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch

Engine = Literal["onnxruntime", "torchscript"]
INPUTS = ("image", "number")
OUTPUTS = ("digit", "sum", "not_digit")
# The ONNX operator set the export targets: one ONNX Runtime 1.x runs in full.
ONNX_OPSET = 17
# Largest difference allowed between the two engines' logits on the probe images: float32
# kernels that sum in another order differ by about 1e-5; a wrong graph differs by whole units.
PARITY_ATOL = 1e-3
# Probe images in the parity check: one batch of the size the batcher forms under load, so the
# batched kernels are the ones compared; a few milliseconds at start-up.
PROBE_IMAGES = 64


class EngineError(Exception):
    """The checkpoint could not be run in ONNX Runtime, or ran differently from TorchScript."""


def export_onnx(module: torch.jit.ScriptModule) -> bytes:
    """The checkpoint's module (on the CPU, eval mode) as an ONNX model, in memory; the batch
    axis is dynamic."""
    image = torch.zeros(2, 1, 28, 28)
    number = torch.zeros(2, dtype=torch.long)
    batch = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    out = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream in favour of the torch.export one,
        # which cannot read a TorchScript file; its warnings help no operator.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (image, number),
            out,  # type: ignore[arg-type]  # typed as a path; this exporter takes a file object
            dynamo=False,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=batch,
            opset_version=ONNX_OPSET,
        )
    return out.getvalue()


class OnnxForward:
    """Called as the TorchScript module is: (images (B,1,28,28) float32, numbers (B,) int64) on
    the CPU -> (digit (B,10), sum (B,19), not_digit (B,)) logits, as tensors over ONNX Runtime's
    arrays (no copy)."""

    def __init__(self, module: torch.jit.ScriptModule, threads: int) -> None:
        try:
            graph = export_onnx(module)
        except Exception as exc:  # torch.onnx raises many kinds: an op it cannot export, ...
            raise EngineError(f"cannot export it to ONNX: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep rather than spin: they share their CPUs with the event loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types, by ONNX Runtime version
            raise EngineError(f"ONNX Runtime cannot load its ONNX export: {exc}") from exc
        names = tuple(output.name for output in self.session.get_outputs())
        if names != OUTPUTS:
            raise EngineError(f"its ONNX export has outputs {names}, expected {OUTPUTS}")

    def __call__(self, images: torch.Tensor, numbers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {
            "image": np.ascontiguousarray(images.numpy()),
            "number": np.ascontiguousarray(numbers.numpy()),
        }
        outputs: list[np.ndarray] = self.session.run(None, feed)
        return tuple(torch.from_numpy(output) for output in outputs)


def probe_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed images for the parity check: blank, full, noise at several densities, strokes."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(PROBE_IMAGES, 1, 28, 28, generator=generator)
    images[0], images[1] = 0.0, 1.0
    images[2:16] = (images[2:16] > 0.8).float()  # sparse dots, as a speck-strewn page
    images[16:24] = 0.0
    for i in range(8):  # a bar each, at several heights and thicknesses: digit-like strokes
        images[16 + i, 0, 4 + 2 * i : 6 + 2 * i + i % 3, 6:22] = 1.0
        images[16 + i, 0, 4:24, 12 + i % 4 : 14 + i % 4] = 1.0
    numbers = torch.arange(PROBE_IMAGES) % 10
    return images, numbers


def check_parity(reference: torch.jit.ScriptModule, engine: OnnxForward) -> None:
    """Raise EngineError unless `engine` gives `reference`'s logits, within PARITY_ATOL, on
    probe_inputs()."""
    images, numbers = probe_inputs()
    with torch.inference_mode():
        want = reference(images, numbers)
    got = engine(images, numbers)
    for name, a, b in zip(OUTPUTS, want, got, strict=True):
        worst = float((a.float() - b).abs().max())
        if not worst <= PARITY_ATOL:  # also catches NaN
            raise EngineError(
                f"ONNX Runtime's {name} logits differ from TorchScript's by {worst:.2g} "
                f"(allowed {PARITY_ATOL:g})"
            )
