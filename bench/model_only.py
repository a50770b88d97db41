"""Model-only throughput: images/s against batch size, eager vs exported, on CPU (and CUDA).

    taskset -c 1 python -m bench.model_only --model models/digitsum.pt --threads 1

Variants: `eager` (training.model.DigitSumNet rebuilt from the file's card and weights),
`torchscript` (the file as torch.jit.load gives it), `frozen` (torch.jit.freeze of it, BatchNorm
folded) and `optimized` (torch.jit.optimize_for_inference of the frozen one, which on CPU may also
convert convolutions to oneDNN: what the service runs with DIGITSUM_CPU_ENGINE=torchscript), and
`onnxruntime` (CPU only: the file exported to ONNX and run by ONNX Runtime, as the service runs
it by default, app/engine.py). Prints one JSON object on stdout.

`int8` (CPU only, timed only when asked: `--variants optimized,int8 --int8-calibration
../shared/data`) is a probe of the next lever, not what the service runs: the eager model with
its trunk quantized to int8 by torch.ao's FX graph mode (x86 backend, static, observers
calibrated on the first 2,048 images of MNIST's training split), scripted and frozen. Beside its
speed it reports how often its digit differs from the file's on the 10,000 MNIST test images of
tests/data (a count, not a choice: nothing is selected on it).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from app.devices import exact_fp32_on_cuda
from app.engine import OnnxForward

if TYPE_CHECKING:
    from training.model import DigitSumNet

CARD_EXTRA_FILE = "metadata.json"
VARIANTS = ("eager", "torchscript", "frozen", "optimized", "onnxruntime", "int8")
DEFAULT_VARIANTS = VARIANTS[:5]
CALIBRATION_IMAGES = 2048
TEST_DATA = Path(__file__).resolve().parent.parent / "tests" / "data"  # MNIST's test split
Model = Callable[[torch.Tensor, torch.Tensor], Any]


def load_variants(
    path: Path,
    device: torch.device,
    wanted: tuple[str, ...] = DEFAULT_VARIANTS,
    calibration: Path | None = None,
) -> tuple[dict[str, Model], dict[str, str]]:
    """Each wanted variant that could be built on `device`, and for the others why not."""
    extra = {CARD_EXTRA_FILE: ""}
    loaded = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    scripted = loaded.eval()
    models: dict[str, Model] = {"torchscript": scripted}
    skipped: dict[str, str] = {}
    eager = None
    if "eager" in wanted or "int8" in wanted:
        try:
            eager = rebuild_eager(scripted, extra[CARD_EXTRA_FILE], device)
        except Exception as exc:  # a card or class that drifted from the file: report, go on
            for name in ("eager", "int8"):
                if name in wanted:
                    skipped[name] = f"{type(exc).__name__}: {exc}"
    if eager is not None and "eager" in wanted:
        models["eager"] = eager
    if eager is not None and "int8" in wanted:
        if device.type != "cpu" or calibration is None:
            skipped["int8"] = "CPU only, and needs --int8-calibration"
        else:
            try:
                models["int8"] = quantize_int8(eager, calibration)
            except Exception as exc:  # torch.ao's quantization may not build here: report it
                skipped["int8"] = f"{type(exc).__name__}: {exc}"
    try:
        if "frozen" in wanted:
            models["frozen"] = torch.jit.freeze(scripted)
        if "optimized" in wanted:
            # optimize_for_inference works on a copy of what it is given (freezing first).
            models["optimized"] = torch.jit.optimize_for_inference(torch.jit.freeze(scripted))
    except Exception as exc:
        skipped["frozen/optimized"] = f"{type(exc).__name__}: {exc}"
    if "onnxruntime" in wanted:
        if device.type != "cpu":
            skipped["onnxruntime"] = "CPU only (the service runs TorchScript on CUDA)"
        else:
            models["onnxruntime"] = OnnxForward(scripted, torch.get_num_threads())
    return models, skipped


def rebuild_eager(
    scripted: torch.jit.ScriptModule, card_text: str, device: torch.device
) -> DigitSumNet:
    """DigitSumNet with the card's config and the file's weights, checked against the file."""
    from training.model import DigitSumNet, ModelConfig  # bench only; the service never does this

    card = json.loads(card_text or "{}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    raw: dict[str, Any] = {}
    for key in ("model_config", "config", "model"):
        candidate = card.get(key)
        if isinstance(candidate, dict):
            nested = candidate.get("model", candidate)
            raw = {k: v for k, v in nested.items() if k in fields}
            if raw:
                break
    if "channels" in raw:
        raw["channels"] = tuple(raw["channels"])
    eager = DigitSumNet(ModelConfig(**raw)).to(device).eval()
    eager.load_state_dict(scripted.state_dict())
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(16, 1, 28, 28, generator=generator).to(device)
    number = torch.randint(0, 10, (16,), generator=generator).to(device)
    with torch.inference_mode():
        worst = max(
            float((a - b).abs().max())
            for a, b in zip(eager(image, number), scripted(image, number), strict=True)
        )
    if worst > 1e-4:
        raise ValueError(f"eager rebuild differs from the file by {worst:.2e}")
    return eager


def quantize_int8(eager: DigitSumNet, data_dir: Path) -> Model:
    """`eager` with its trunk quantized to int8 (see the module's docstring), scripted, frozen."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from training.data import load_split, raw_dir

    torch.backends.quantized.engine = "x86"
    model = copy.deepcopy(eager).eval()
    images = load_split(raw_dir(data_dir), "train").images[:CALIBRATION_IMAGES]
    # The trunk sees normalised images: the module normalises before it (DigitSumNet.embed).
    normalised = (images - model.mean) / model.std
    trunk = prepare_fx(model.trunk, get_default_qconfig_mapping("x86"), (normalised[:8],))
    with torch.no_grad():
        for batch in normalised.split(256):
            trunk(batch)  # the observers record each layer's range
    model.trunk = convert_fx(trunk)  # type: ignore[assignment]  # a GraphModule, not a Sequential
    frozen: Model = torch.jit.freeze(torch.jit.script(model))
    return frozen


@torch.inference_mode()
def digit_disagreement(models: dict[str, Model], data_dir: Path) -> dict[str, int]:
    """For each variant, on how many MNIST test images its digit differs from the file's."""
    from training.data import load_split, raw_dir

    images = load_split(raw_dir(data_dir), "t10k").images.split(500)
    numbers = torch.zeros(500, dtype=torch.long)
    digits = {
        name: torch.cat([model(x, numbers[: len(x)])[0].argmax(1) for x in images])
        for name, model in models.items()
    }
    reference = digits["torchscript"]
    return {
        name: int((d != reference).sum()) for name, d in digits.items() if name != "torchscript"
    }


@torch.inference_mode()
def images_per_second(
    model: Model, batch_size: int, device: torch.device, seconds: float, slices: int = 5
) -> float:
    """Median over `slices` timed slices of images/s, after a warm-up that lets the JIT settle."""
    image = torch.rand(batch_size, 1, 28, 28, device=device)
    number = torch.randint(0, 10, (batch_size,), device=device)
    warm_until = time.perf_counter() + max(0.1, seconds / 5)
    calls = 0
    while calls < 5 or time.perf_counter() < warm_until:
        model(image, number)
        calls += 1
    synchronize(device)
    rates = []
    for _ in range(slices):
        calls, start = 0, time.perf_counter()
        while True:
            model(image, number)
            calls += 1
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / slices:
                break
        rates.append(calls * batch_size / elapsed)
    return statistics.median(rates)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    path: Path,
    device: torch.device,
    batch_sizes: list[int],
    seconds: float,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    calibration: Path | None = None,
) -> dict[str, Any]:
    models, skipped = load_variants(path, device, variants, calibration)
    rows: list[dict[str, Any]] = []
    for name in [v for v in VARIANTS if v in models and v in variants]:
        # Timed inside the try too: a variant can build and still fail at its first calls
        # (TorchScript compiles fusion groups only once it has profiled a few runs).
        try:
            timed = [
                {
                    "variant": name,
                    "batch_size": batch,
                    "images_per_s": images_per_second(models[name], batch, device, seconds),
                }
                for batch in batch_sizes
            ]
        except Exception as exc:  # report it and time the others
            skipped[name] = f"{type(exc).__name__}: {exc}"
            del models[name]
            continue
        rows += timed
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": str(device),
        "device_name": name,
        "rows": rows,
        "skipped": skipped,
        "max_abs_diff_vs_torchscript": agreement(models, device),
    }
    if "int8" in models:
        result["mnist_test_digits_differing"] = digit_disagreement(models, TEST_DATA)
    return result


@torch.inference_mode()
def agreement(models: dict[str, Model], device: torch.device) -> dict[str, float]:
    """Largest |logit difference| of each variant against the file as loaded, on 256 random inputs.

    A faster variant only counts if it computes the same thing.
    """
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(256, 1, 28, 28, generator=generator).to(device)
    number = torch.randint(0, 10, (256,), generator=generator).to(device)
    reference = models["torchscript"](image, number)
    differences: dict[str, float] = {}
    for name, model in models.items():
        if name == "torchscript":
            continue
        try:
            differences[name] = max(
                float((a.float() - b.float()).abs().max())
                for a, b in zip(model(image, number), reference, strict=True)
            )
        except Exception:  # measure() timed it, so this is rare; NaN says "not compared"
            differences[name] = float("nan")
    return differences


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("models/digitsum.pt"),
        help="TorchScript file (default: models/digitsum.pt)",
    )
    parser.add_argument(
        "--batch-sizes",
        default="1,8,64,256",
        help="comma-separated batch sizes (default: 1,8,64,256)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads on CPU (default: 1)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="timed seconds per variant and batch size (default: 2.0)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated variants to time, of {','.join(VARIANTS)} "
        f"(default: {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--int8-calibration",
        type=Path,
        default=None,
        help="data folder with MNIST's training split, for the int8 variant's observers",
    )
    parser.add_argument(
        "--devices",
        default="cpu,cuda",
        help="comma-separated devices to time; cuda only where present (default: cpu,cuda)",
    )
    parser.add_argument(
        "--cuda-fuser",
        choices=("off", "on"),
        default="off",
        help="TorchScript's fuser on the GPU: off as the service runs it (app.devices."
        "exact_fp32_on_cuda, which also turns TF32 off), or on as torch has it (default: off)",
    )
    parser.add_argument(
        "--no-cuda",
        action="store_true",
        help="skip CUDA even when present (same as --devices cpu)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notes
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    devices = [d for d in args.devices.split(",") if d]
    if args.no_cuda or not torch.cuda.is_available():
        devices = [d for d in devices if d != "cuda"]
    if "cuda" in devices:
        exact_fp32_on_cuda()  # the service's CUDA settings
        torch._C._jit_override_can_fuse_on_gpu(args.cuda_fuser == "on")
    result = {
        "threads": args.threads,
        "cuda_fuser": args.cuda_fuser if "cuda" in devices else None,
        "torch": torch.__version__,
        "devices": [
            measure(
                args.model,
                torch.device(d),
                batch_sizes,
                args.seconds,
                variants,
                args.int8_calibration,
            )
            for d in devices
        ],
    }
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
