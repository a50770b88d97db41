"""How often the service's answers change with the device, the precision or the CPU engine:
counts, not bars.

    python -m bench.precision --data-dir tests/data            # needs CUDA; prints one JSON object
    python -m bench.precision --data-dir tests/data --engines  # the CPU's two engines

Every (image, number) pair of the MNIST test set (100,000 pairs, so 200,000 answers: the digit
and the sum) goes through app.inference.LoadedModel.predict, the path the service runs, on the
CPU in fp32 (the reference) and on CUDA in fp32, bf16 and fp16. A CUDA fp32 answer that differs
from the CPU's is reported with the CPU's margin between its two best logits for that pair: a
near-tie (margin under NEAR_TIE) may fall either way under a different order of summation; a
clear answer must not. Half precision is reported as it is (fp32 stays the service's default;
DIGITSUM_PRECISION offers bf16/fp16 with these figures beside it, docs/gpu-check.md).

`--engines` compares the CPU's two engines the same way, no CUDA needed: ONNX Runtime (the
service's default, app/engine.py) against the TorchScript module (DIGITSUM_CPU_ENGINE=torchscript),
with TorchScript's margins.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.inference import LoadedModel, load_model
from training.data import Split, ensure_mnist, load_split

NEAR_TIE = 1e-3  # logits: a pair whose two best differ by less may flip between fp32 kernels
BATCH = 1000


@dataclass(frozen=True)
class Answers:
    """Every pair's digit and sum, in the order of pairs(): (P,) int64 each."""

    digits: torch.Tensor
    sums: torch.Tensor


def pairs(split: Split, batch: int = BATCH) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images (B, 1, 28, 28), numbers (B,)) for every image with every number 0..9."""
    for number in range(10):
        for start in range(0, len(split), batch):
            images = split.images[start : start + batch]
            yield images, torch.full((len(images),), number, dtype=torch.long)


def answers(model: LoadedModel, split: Split) -> Answers:
    """The service's answers for every pair (through LoadedModel.predict)."""
    digits: list[int] = []
    sums: list[int] = []
    for images, numbers in pairs(split):
        for prediction in model.predict(images, numbers):
            digits.append(prediction.digit)
            sums.append(prediction.sum)
    return Answers(torch.tensor(digits), torch.tensor(sums))


def differing(a: Answers, b: Answers) -> int:
    """Answers (digits and sums counted apart) that differ between a and b."""
    return int((a.digits != b.digits).sum() + (a.sums != b.sums).sum())


@torch.inference_mode()
def margins(model: LoadedModel, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the gap between the two best digit logits and the two best sum logits. (P,) x2

    Reads the module's first two outputs (digit, sum logits) whatever else it returns.
    """
    digit_gaps, sum_gaps = [], []
    for images, numbers in pairs(split):
        outputs = model.module(images.to(model.device), numbers.to(model.device))
        for logits, gaps in ((outputs[0], digit_gaps), (outputs[1], sum_gaps)):
            top2 = logits.float().topk(2, dim=1).values.cpu()
            gaps.append(top2[:, 0] - top2[:, 1])
    return torch.cat(digit_gaps), torch.cat(sum_gaps)


def largest_margin_of_a_difference(
    reference: Answers, other: Answers, gaps: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """The reference's widest top-two margin among the answers that differ (0.0 when none do):
    under NEAR_TIE, every difference is a near-tie."""
    widest = 0.0
    for want, got, gap in (
        (reference.digits, other.digits, gaps[0]),
        (reference.sums, other.sums, gaps[1]),
    ):
        changed = want != got
        if bool(changed.any()):
            widest = max(widest, float(gap[changed].max()))
    return widest


def _counts(split: Split) -> dict[str, Any]:
    return {"pairs": len(split) * 10, "answers": len(split) * 20, "near_tie": NEAR_TIE}


def _against(
    reference_model: LoadedModel, reference: Answers, other: Answers, split: Split, name: str
) -> dict[str, Any]:
    """How many answers of `other` differ from `reference`, and the reference model's widest
    margin among them (reported under `largest_{name}_margin_of_a_difference`)."""
    return {
        "differ": differing(reference, other),
        f"largest_{name}_margin_of_a_difference": largest_margin_of_a_difference(
            reference, other, margins(reference_model, split)
        ),
    }


def measure(model_path: Path, split: Split) -> dict[str, Any]:
    """CPU fp32 as the reference; CUDA fp32 against it (with margins), bf16 and fp16 against
    CUDA fp32. Needs CUDA."""
    cpu = load_model(model_path, torch.device("cpu"))
    reference = answers(cpu, split)
    cuda = load_model(model_path, torch.device("cuda"))
    cuda_fp32 = answers(cuda, split)
    result: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(cuda.device),
        **_counts(split),
        "cuda_fp32_vs_cpu": _against(cpu, reference, cuda_fp32, split, "cpu"),
    }
    for precision in ("bf16", "fp16"):
        half = load_model(model_path, torch.device("cuda"), precision)
        result[f"{precision}_vs_fp32"] = {"differ": differing(cuda_fp32, answers(half, split))}
    return result


def measure_engines(model_path: Path, split: Split) -> dict[str, Any]:
    """On the CPU: ONNX Runtime's answers against the TorchScript module's."""
    torchscript = load_model(model_path, torch.device("cpu"), cpu_engine="torchscript")
    onnxruntime = load_model(model_path, torch.device("cpu"), cpu_engine="onnxruntime")
    reference = answers(torchscript, split)
    other = answers(onnxruntime, split)
    return {
        **_counts(split),
        "onnxruntime_vs_torchscript": _against(torchscript, reference, other, split, "torchscript"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("models/digitsum.pt"),
        help="TorchScript file (default: models/digitsum.pt)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("tests/data"),
        help="folder holding MNIST/raw/t10k-*.gz (default: tests/data)",
    )
    parser.add_argument(
        "--engines",
        action="store_true",
        help="compare the CPU's engines (ONNX Runtime against TorchScript) instead; no CUDA",
    )
    args = parser.parse_args(argv)
    if not args.engines and not torch.cuda.is_available():
        print("error: needs a CUDA device", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notes
    folder = ensure_mnist(args.data_dir, splits=("t10k",), download=False)
    split = load_split(folder, "t10k")
    json.dump((measure_engines if args.engines else measure)(args.model, split), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
