"""Exhaustive evaluation: every test image with every number 0..9 (100,000 pairs for MNIST).

    python -m training.evaluate models/digitsum.pt --data-dir ../shared/data

Works on the eager DigitSumNet and on the exported TorchScript file alike (both have
`embed` and `heads`), so the figures in the model card are the ones anyone can reproduce.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from app.devices import DEVICE_HELP, DeviceError, exact_fp32_on_cuda, resolve_device
from training.data import DataError, Split, ensure_mnist, load_split


class PairModel(Protocol):
    def embed(self, image: torch.Tensor) -> torch.Tensor: ...
    def heads(
        self, features: torch.Tensor, number: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class Metrics:
    """Accuracy of both heads over all (image, number) pairs, and their agreement."""

    images: int
    pairs: int
    digit_accuracy: float
    sum_accuracy: float
    consistency: float
    sum_accuracy_by_number: list[float]
    confusion: list[list[int]] = field(repr=False)  # [true digit][predicted digit]

    def summary(self) -> dict[str, object]:
        return {
            "images": self.images,
            "pairs": self.pairs,
            "digit_accuracy": round(self.digit_accuracy, 6),
            "sum_accuracy": round(self.sum_accuracy, 6),
            "consistency": round(self.consistency, 6),
            "sum_accuracy_by_number": [round(a, 6) for a in self.sum_accuracy_by_number],
        }

    def table(self) -> str:
        rows = [
            ("digit accuracy", f"{self.digit_accuracy:.3%}", f"{self.images:,} images"),
            ("sum accuracy", f"{self.sum_accuracy:.3%}", f"{self.pairs:,} pairs"),
            ("consistency", f"{self.consistency:.3%}", "sum == digit + number"),
        ]
        lines = [f"{'metric':<16} {'value':>8}  over", "-" * 44]
        lines += [f"{name:<16} {value:>8}  {over}" for name, value, over in rows]
        return "\n".join(lines)


@torch.inference_mode()
def evaluate_pairs(
    model: PairModel, split: Split, device: torch.device, batch_size: int = 1000
) -> Metrics:
    """Score `model` (already in eval mode, on `device`) on `split` x numbers 0..9."""
    n = len(split)
    digit_correct = sum_correct = consistent = 0
    sum_correct_by_number = torch.zeros(10, dtype=torch.long)
    confusion = torch.zeros(10, 10, dtype=torch.long)
    for start in range(0, n, batch_size):
        images = split.images[start : start + batch_size].to(device)  # (B, 1, 28, 28)
        labels = split.labels[start : start + batch_size].to(device)  # (B,)
        features = model.embed(images)  # the trunk runs once per image, not once per pair
        for number in range(10):
            numbers = torch.full_like(labels, number)
            digit_logits, sum_logits = model.heads(features, numbers)
            digit = digit_logits.argmax(1)
            total = sum_logits.argmax(1)
            if number == 0:
                digit_correct += int((digit == labels).sum())
                confusion += torch.bincount((labels * 10 + digit).cpu(), minlength=100).reshape(
                    10, 10
                )
            hits = int((total == labels + number).sum())
            sum_correct += hits
            sum_correct_by_number[number] += hits
            consistent += int((total == digit + number).sum())
    pairs = n * 10
    return Metrics(
        images=n,
        pairs=pairs,
        digit_accuracy=digit_correct / n,
        sum_accuracy=sum_correct / pairs,
        consistency=consistent / pairs,
        sum_accuracy_by_number=(sum_correct_by_number.double() / n).tolist(),
        confusion=confusion.tolist(),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Print the metrics of an exported digitsum checkpoint on the MNIST test set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a TorchScript file written by the trainer")
    p.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="folder holding MNIST/raw/t10k-*.gz"
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
        if device.type == "cuda":
            exact_fp32_on_cuda()  # score what the service computes (app/devices.py says why)
        folder = ensure_mnist(args.data_dir, splits=("t10k",), download=False)
        test = load_split(folder, "t10k")
        model = torch.jit.load(str(args.checkpoint), map_location=device).eval()
    except (DataError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: cannot load {args.checkpoint}: {exc}", file=sys.stderr)
        return 2
    metrics = evaluate_pairs(model, test, device)
    print(metrics.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
