"""Exhaustive evaluation: every test image with every number 0..9 (100,000 pairs for MNIST).

    python -m training.evaluate models/digitsum.pt --data-dir ../shared/data

Works on the eager DigitSumNet and on the exported TorchScript file alike (both have
`embed`, `heads` and `not_digit`), so the figures in the model card are the ones anyone can
reproduce: accuracy of both heads, their agreement, the expected calibration error of the
confidences, and the share of digits the not-a-digit head would refuse at the card's threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from app.devices import DEVICE_HELP, DeviceError, exact_fp32_on_cuda, resolve_device
from training.calibrate import expected_calibration_error
from training.data import DataError, Split, ensure_mnist, load_split

if TYPE_CHECKING:
    from training.synthetic import GlyphPool


class PairModel(Protocol):
    def embed(self, image: torch.Tensor) -> torch.Tensor: ...
    def heads(
        self, features: torch.Tensor, number: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...
    def not_digit(self, features: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Metrics:
    """Accuracy of both heads over all (image, number) pairs, and their agreement."""

    images: int
    pairs: int
    digit_accuracy: float
    sum_accuracy: float
    consistency: float
    sum_accuracy_by_number: list[float]
    digit_ece: float
    sum_ece: float
    refused_as_not_digit: float  # share of images at or over the threshold
    not_digit_threshold: float
    confusion: list[list[int]] = field(repr=False)  # [true digit][predicted digit]

    def summary(self) -> dict[str, object]:
        return {
            "images": self.images,
            "pairs": self.pairs,
            "digit_accuracy": round(self.digit_accuracy, 6),
            "sum_accuracy": round(self.sum_accuracy, 6),
            "consistency": round(self.consistency, 6),
            "sum_accuracy_by_number": [round(a, 6) for a in self.sum_accuracy_by_number],
            "digit_ece": round(self.digit_ece, 6),
            "sum_ece": round(self.sum_ece, 6),
            "refused_as_not_digit": round(self.refused_as_not_digit, 6),
            "not_digit_threshold": self.not_digit_threshold,
        }

    def table(self) -> str:
        rows = [
            ("digit accuracy", f"{self.digit_accuracy:.3%}", f"{self.images:,} images"),
            ("sum accuracy", f"{self.sum_accuracy:.3%}", f"{self.pairs:,} pairs"),
            ("consistency", f"{self.consistency:.3%}", "sum == digit + number"),
            ("digit ECE", f"{self.digit_ece:.3%}", "expected calibration error, 15 bins"),
            ("sum ECE", f"{self.sum_ece:.3%}", "over all pairs"),
            (
                "no_digit",
                f"{self.refused_as_not_digit:.3%}",
                f"digits refused at threshold {self.not_digit_threshold:g}",
            ),
        ]
        lines = [f"{'metric':<16} {'value':>8}  over", "-" * 44]
        lines += [f"{name:<16} {value:>8}  {over}" for name, value, over in rows]
        return "\n".join(lines)


@torch.inference_mode()
def evaluate_pairs(
    model: PairModel,
    split: Split,
    device: torch.device,
    batch_size: int = 1000,
    not_digit_threshold: float = 1.0,
) -> Metrics:
    """Score `model` (already in eval mode, on `device`) on `split` x numbers 0..9."""
    n = len(split)
    digit_correct = sum_correct = consistent = refused = 0
    sum_correct_by_number = torch.zeros(10, dtype=torch.long)
    confusion = torch.zeros(10, 10, dtype=torch.long)
    digit_conf, digit_hit, sum_conf, sum_hit = [], [], [], []
    for start in range(0, n, batch_size):
        images = split.images[start : start + batch_size].to(device)  # (B, 1, 28, 28)
        labels = split.labels[start : start + batch_size].to(device)  # (B,)
        features = model.embed(images)  # the trunk runs once per image, not once per pair
        refused += int((model.not_digit(features).sigmoid() >= not_digit_threshold).sum())
        for number in range(10):
            numbers = torch.full_like(labels, number)
            digit_logits, sum_logits = model.heads(features, numbers)
            digit_p, digit = digit_logits.float().softmax(1).max(1)
            sum_p, total = sum_logits.float().softmax(1).max(1)
            if number == 0:
                digit_correct += int((digit == labels).sum())
                confusion += torch.bincount((labels * 10 + digit).cpu(), minlength=100).reshape(
                    10, 10
                )
                digit_conf.append(digit_p.cpu())
                digit_hit.append((digit == labels).cpu())
            hits = int((total == labels + number).sum())
            sum_correct += hits
            sum_correct_by_number[number] += hits
            consistent += int((total == digit + number).sum())
            sum_conf.append(sum_p.cpu())
            sum_hit.append((total == labels + number).cpu())
    pairs = n * 10
    return Metrics(
        images=n,
        pairs=pairs,
        digit_accuracy=digit_correct / n,
        sum_accuracy=sum_correct / pairs,
        consistency=consistent / pairs,
        sum_accuracy_by_number=(sum_correct_by_number.double() / n).tolist(),
        digit_ece=expected_calibration_error(torch.cat(digit_conf), torch.cat(digit_hit)),
        sum_ece=expected_calibration_error(torch.cat(sum_conf), torch.cat(sum_hit)),
        refused_as_not_digit=refused / n,
        not_digit_threshold=not_digit_threshold,
        confusion=confusion.tolist(),
    )


BLEND_SEED = 99


def blended_inconsistency(
    model: PairModel, split: Split, seed: int = BLEND_SEED
) -> tuple[int, int]:
    """(pairs whose sum does not follow the digit, pairs) on `split`'s images each blended with
    another image of a different digit at 35-65 %, with every number 0..9.

    Clean digits almost never split the digit head's belief between two digits, so a clean
    split cannot show whether the sum follows the digit on a near-tie; blends make near-ties on
    purpose. Used on the validation slice to choose how sharply the settled table reads the
    belief (docs/model.md, "Sums on a near-tie")."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = split.images.cpu(), split.labels.cpu()
    partner = torch.randperm(len(split), generator=generator)
    share = 0.35 + 0.3 * torch.rand(len(split), 1, 1, 1, generator=generator)
    differ = labels != labels[partner]
    blends = Split((share * images + (1 - share) * images[partner])[differ], labels[differ])
    metrics = evaluate_pairs(model, blends, torch.device("cpu"))
    return metrics.pairs - round(metrics.consistency * metrics.pairs), metrics.pairs


@dataclass
class ValidationScores:
    """What model selection reads after each epoch: the validation slice of MNIST's training
    split and the synthetic validation glyphs (never the test split)."""

    mnist: Metrics
    glyph_digit_accuracy: float
    glyph_negatives_refused: float  # at probability 0.5
    page_negatives_refused: float | None = None  # reported, not scored: their count is small

    @property
    def score(self) -> float:
        """Higher is better: errors on MNIST count most (its bar is the tightest)."""
        return -(
            4 * (1 - self.mnist.sum_accuracy)
            + (1 - self.glyph_digit_accuracy)
            + 0.5 * (1 - self.glyph_negatives_refused)
        )

    def summary(self) -> dict[str, float]:
        return {
            "val_digit_accuracy": self.mnist.digit_accuracy,
            "val_sum_accuracy": self.mnist.sum_accuracy,
            "val_consistency": self.mnist.consistency,
            "val_glyph_digit_accuracy": round(self.glyph_digit_accuracy, 6),
            "val_glyph_negatives_refused": round(self.glyph_negatives_refused, 6),
        } | (
            {}
            if self.page_negatives_refused is None
            else {"val_page_negatives_refused": round(self.page_negatives_refused, 6)}
        )


@torch.inference_mode()
def glyph_digit_accuracy(model: PairModel, digits: GlyphPool, device: torch.device) -> float:
    """The share of `digits` whose digit head's answer is right (number 0)."""
    correct = 0
    for start in range(0, len(digits), 1000):
        features = model.embed(digits.images[start : start + 1000].to(device))
        numbers = torch.zeros(features.shape[0], dtype=torch.long, device=device)
        predicted = model.heads(features, numbers)[0].argmax(1)
        correct += int((predicted == digits.labels[start : start + 1000].to(device)).sum())
    return correct / max(len(digits), 1)


@torch.inference_mode()
def score_glyphs(model: PairModel, glyphs: GlyphPool, device: torch.device) -> dict[str, float]:
    """The synthetic validation glyphs alone: what a final fit, which trains on MNIST's whole
    training split, can still be scored on after each epoch (reported, not used to choose)."""
    return {
        "val_glyph_digit_accuracy": round(glyph_digit_accuracy(model, glyphs.digits, device), 6),
        "val_glyph_negatives_refused": round(_refused(model, glyphs.negatives, device), 6),
    }


@torch.inference_mode()
def score_validation(
    model: PairModel,
    val: Split,
    glyphs: GlyphPool,
    device: torch.device,
    pages: GlyphPool | None = None,
) -> ValidationScores:
    mnist = evaluate_pairs(model, val, device)
    return ValidationScores(
        mnist,
        glyph_digit_accuracy(model, glyphs.digits, device),
        _refused(model, glyphs.negatives, device),
        _refused(model, pages, device) if pages is not None and len(pages) else None,
    )


def _refused(model: PairModel, pool: GlyphPool, device: torch.device) -> float:
    """The share of `pool` the not-digit head refuses at probability 0.5."""
    refused = 0
    for start in range(0, len(pool), 1000):
        features = model.embed(pool.images[start : start + 1000].to(device))
        refused += int((model.not_digit(features) >= 0).sum())
    return refused / max(len(pool), 1)


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
        extra = {"metadata.json": ""}
        model = torch.jit.load(str(args.checkpoint), map_location=device, _extra_files=extra).eval()
        card = json.loads(extra["metadata.json"] or "{}")
    except (DataError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: cannot load {args.checkpoint}: {exc}", file=sys.stderr)
        return 2
    threshold = float(card.get("no_digit", {}).get("threshold", 1.0))
    metrics = evaluate_pairs(model, test, device, not_digit_threshold=threshold)
    print(metrics.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
