"""TrainConfig: every knob of a training run, filled from argparse and saved in the model card."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.devices import DEVICE_HELP, DeviceError, check_device_name
from training.model import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `smoke` shrinks it to a few steps on a small subset (for tests)."""

    data_dir: Path = Path("data")
    out: Path = Path("models")
    state: Path = Path("runs/train_state.pt")
    epochs: int = 24
    batch_size: int = 128
    val_images: int = 5_000
    glyph_digits: int = 40_000
    glyph_negatives: int = 20_000
    drawing_digits: int = 0
    drawing_negatives: int = 0
    glyph_batch: int = 32
    negative_batch: int = 24
    page_photos: int = 0
    page_batch: int = 6
    not_digit_weight: float = 1.0
    mnist_roughen: float = 1.0
    mnist_warp: float = 1.0
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    agreement_weight: float = 2.0
    teacher: Path | None = None
    final_fit: Path | None = None
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    settle_steps: int = 600
    settle_sharpness: float = 16.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    smoke: bool = False
    resume: bool = False
    download: bool = True
    verify_checksums: bool = True
    threads: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _channels(text: str) -> tuple[int, int, int]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not three comma-separated integers: {text!r}") from None
    if len(widths) != 3 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"not three positive widths: {text!r}")
    return widths[0], widths[1], widths[2]


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train DigitSumNet on MNIST (image, number) pairs; export it as TorchScript.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=d.data_dir,
        help="folder holding MNIST/raw/*.gz (downloaded there if missing)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=d.out,
        help="where digitsum.pt, its model card and plots are written",
    )
    p.add_argument(
        "--state",
        type=Path,
        default=d.state,
        help="resumable training checkpoint, written after every epoch",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training set")
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="images per optimiser step (per process under torchrun)",
    )
    p.add_argument(
        "--val-images",
        type=int,
        default=d.val_images,
        help="MNIST training images held out for model selection, calibration and thresholds",
    )
    p.add_argument(
        "--glyph-digits",
        type=int,
        default=d.glyph_digits,
        help="synthetic digits rendered from the train glyph sources (training/glyphs.py)",
    )
    p.add_argument(
        "--glyph-negatives",
        type=int,
        default=d.glyph_negatives,
        help="synthetic non-digits (letters, symbols, scribbles, blobs) for the not-digit head",
    )
    p.add_argument(
        "--drawing-digits",
        type=int,
        default=d.drawing_digits,
        help="digits drawn with a mouse on the try-it page's pad (training/glyphs.py "
        "render_drawing), put through the service's pipeline and added to the synthetic digits "
        "(and a proportional share to the validation glyphs); 0: none, as the shipped model",
    )
    p.add_argument(
        "--drawing-negatives",
        type=int,
        default=d.drawing_negatives,
        help="non-digits drawn with a mouse on the pad (letters, symbols, scribbles), added to "
        "the synthetic non-digits (and a proportional share to the validation glyphs)",
    )
    p.add_argument(
        "--glyph-batch",
        type=int,
        default=d.glyph_batch,
        help="synthetic digits added to each step's MNIST batch",
    )
    p.add_argument(
        "--negative-batch",
        type=int,
        default=d.negative_batch,
        help="non-digits added to each step's batch",
    )
    p.add_argument(
        "--page-photos",
        type=int,
        default=d.page_photos,
        help="blank-page photos put through the service's pipeline to mine page negatives "
        "(training/pages.py; 14000 gives about 730); 0: none, as the shipped model "
        "(docs/model.md, runs 6 and 7)",
    )
    p.add_argument(
        "--page-batch",
        type=int,
        default=d.page_batch,
        help="page negatives added to each step's batch, when --page-photos mines some",
    )
    p.add_argument(
        "--not-digit-weight",
        type=float,
        default=d.not_digit_weight,
        help="weight of the not-digit head's loss",
    )
    p.add_argument(
        "--mnist-roughen",
        type=float,
        default=d.mnist_roughen,
        help="share of each batch's MNIST images that go through the pen-and-photo roughening "
        "(training/data.py roughen); the synthetic digits and non-digits always do. 1: all, as "
        "every run before run 22 (docs/model.md)",
    )
    p.add_argument(
        "--mnist-warp",
        type=float,
        default=d.mnist_warp,
        help="strength of the random affine and elastic warps (training/data.py augment) on "
        "each batch's MNIST images; the synthetic digits and non-digits always get 1. 1: as "
        "every run before run 26 (docs/model.md)",
    )
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (one-cycle schedule)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=d.label_smoothing,
        help="label smoothing of both heads' cross-entropy",
    )
    p.add_argument(
        "--agreement-weight",
        type=float,
        default=d.agreement_weight,
        help="weight of the loss that teaches the sum head to agree with the digit head",
    )
    p.add_argument(
        "--channels",
        type=_channels,
        default=d.model.channels,
        help="the trunk's three convolution widths, comma-separated",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        default=d.teacher,
        help="a TorchScript checkpoint whose digit and not-digit answers the model also learns "
        "from, on the same augmented batches (knowledge distillation); none by default",
    )
    p.add_argument(
        "--final-fit",
        type=Path,
        default=d.final_fit,
        metavar="TWIN",
        help="the final fit: train on all of MNIST's training split (the validation slice "
        "too) for --epochs and export the last epoch's weight average, with the calibration "
        "temperatures and the no-digit threshold carried over from TWIN, the checkpoint of a run "
        "with the same recipe and seed that held the slice back and was chosen on it "
        "(docs/model.md, issue 26, 'The final fit'); none by default",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        default=d.distill_weight,
        help="weight of the teacher's terms in the loss (with --teacher)",
    )
    p.add_argument(
        "--distill-temperature",
        type=float,
        default=d.distill_temperature,
        help="softmax temperature of the digit head's distillation term (with --teacher)",
    )
    p.add_argument(
        "--settle-steps",
        type=int,
        default=d.settle_steps,
        help="after training, optimiser steps that refit the addition table alone at the "
        "sharpened belief the exported model then reads (0: export the table as trained)",
    )
    p.add_argument(
        "--settle-sharpness",
        type=float,
        default=d.settle_sharpness,
        help="how many times the digit logits are scaled before the softmax that the exported "
        "sum head reads (with --settle-steps)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=d.ema_decay,
        help="decay of the weight average that is evaluated and exported",
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help="seed of weights, pairing and augmentation"
    )
    p.add_argument("--device", default=d.device, help=DEVICE_HELP)
    p.add_argument(
        "--threads", type=int, default=d.threads, help="CPU threads for torch (0: torch's default)"
    )
    p.add_argument("--smoke", action="store_true", help="a few steps on a small subset, for tests")
    p.add_argument("--resume", action="store_true", help="continue from --state if it exists")
    p.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download MNIST; fail if the files are missing",
    )
    p.add_argument(
        "--skip-checksums",
        dest="verify_checksums",
        action="store_false",
        help="accept IDX files whose MD5 differs from MNIST's (synthetic data in tests)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    try:
        check_device_name(args.device)
    except DeviceError as exc:
        build_parser().error(f"--device: {exc}")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        build_parser().error("--epochs and --batch-size must be >= 1 and --lr > 0")
    if args.teacher is not None and not args.teacher.is_file():
        build_parser().error(f"--teacher: no checkpoint at {args.teacher}")
    if args.final_fit is not None and not args.final_fit.is_file():
        build_parser().error(f"--final-fit: no checkpoint at {args.final_fit}")
    if not 0 <= args.mnist_roughen <= 1:
        build_parser().error("--mnist-roughen must be between 0 and 1")
    if not 0 <= args.mnist_warp <= 1:
        build_parser().error("--mnist-warp must be between 0 and 1")
    if args.settle_steps < 0 or args.settle_sharpness <= 0:
        build_parser().error("--settle-steps must be >= 0 and --settle-sharpness > 0")
    values = vars(args)
    model = ModelConfig(channels=values.pop("channels"))
    return TrainConfig(**values, model=model)
