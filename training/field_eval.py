"""The field test set read by the service's own path, with a table per scene.

    python -m training.field_eval [--field-dir data/field] [--split heldout]
                                  [--model models/digitsum.pt] [--json PATH]

Every image goes through `app.imaging.prepare_image` (the bytes as uploaded) and
`app.inference.LoadedModel.predict`, with a seeded random addend 0..9 per image. An image is
*refused* when prepare_image raises `app.errors.NoDigit` or the prediction says `no_digit`;
any other 4xx error of the pipeline is counted apart (`error`). For digits a refusal or an
error is a miss; for negatives a refusal is the right answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from app.config import DEFAULT_MAX_IMAGE_PIXELS
from app.errors import NoDigit, ServiceError
from app.imaging import prepare_image
from app.inference import LoadedModel, load_model
from app.ink_params import PARAMS, InkParams
from training.calibrate import expected_calibration_error

BATCH = 256


@dataclass
class Outcome:
    """What the service answered for one image of the manifest."""

    file: str
    kind: str
    scene: str | None
    source: str | None
    label: int | None
    number: int
    answer: str  # "read", "no_digit", "error" (another 4xx) or "crash" (an exception: a 500)
    digit: int | None = None
    sum: int | None = None
    digit_confidence: float | None = None
    error: str | None = None
    rule: str | None = None  # what refused it: app.ink.RULES, "blank_frame" or "model"

    @property
    def digit_right(self) -> bool:
        return self.answer == "read" and self.digit == self.label

    @property
    def sum_right(self) -> bool:
        return (
            self.answer == "read"
            and self.label is not None
            and self.sum == self.label + self.number
        )


@dataclass
class Row:
    """One line of a table: counts and rates (in %) over a group of images."""

    name: str
    n: int
    digit_accuracy: float | None = None
    sum_accuracy: float | None = None
    refused: float = 0.0
    errors: float = 0.0  # other 4xx answers and crashes (500s)


@dataclass
class FieldReport:
    """Per-scene rows for digits, per-kind rows for negatives, and every outcome."""

    split: str
    model: str
    scenes: list[Row] = field(default_factory=list)
    overall: Row | None = None
    families: list[Row] = field(default_factory=list)
    negatives: list[Row] = field(default_factory=list)
    blank_by_scene: list[Row] = field(default_factory=list)
    # Expected calibration error of digit_confidence over the digits that were read (15 bins):
    # does a confidence of 0.9 mean nine in ten right on photos too?
    digit_ece: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Everything but the per-image outcomes, for JSON."""
        out = asdict(self)
        del out["outcomes"]
        return out


def read_manifest(split_dir: Path) -> list[dict[str, object]]:
    """The manifest's rows, in file order."""
    path = split_dir / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make it with `make field-data`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(
    split_dir: Path,
    model: LoadedModel,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    seed: int = 0,
    params: InkParams = PARAMS,
) -> list[Outcome]:
    """Every image of a split through prepare_image and predict, as the service does (with
    the photo pipeline's tuned numbers `params`)."""
    rows = read_manifest(split_dir)
    numbers = np.random.default_rng(seed).integers(0, 10, size=len(rows)).tolist()
    outcomes: list[Outcome] = []
    pending: list[tuple[Outcome, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        images = torch.stack([t for _, t in pending])  # (B, 1, 28, 28)
        addends = torch.tensor([o.number for o, _ in pending], dtype=torch.long)
        for (outcome, _), pred in zip(pending, model.predict(images, addends), strict=True):
            if getattr(pred, "no_digit", False):
                outcome.answer = "no_digit"
                outcome.error = "the model: not a digit"
                outcome.rule = "model"
            else:
                outcome.answer = "read"
            outcome.digit, outcome.sum = int(pred.digit), int(pred.sum)
            outcome.digit_confidence = float(pred.digit_confidence)
        pending.clear()

    for row, number in zip(rows, numbers, strict=True):
        label = row.get("label")
        outcome = Outcome(
            file=str(row["file"]),
            kind=str(row["kind"]),
            scene=None if row.get("scene") is None else str(row["scene"]),
            source=None if row.get("source") is None else str(row["source"]),
            label=None if label is None else int(str(label)),
            number=int(number),
            answer="error",
        )
        outcomes.append(outcome)
        try:
            prepared = prepare_image((split_dir / outcome.file).read_bytes(), max_pixels, params)
        except NoDigit as exc:
            outcome.answer = "no_digit"
            outcome.error = f"the pipeline: {exc}"
            outcome.rule = exc.rule
            continue
        except ServiceError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            continue
        except Exception as exc:  # the service would answer 500: worth a line of its own
            outcome.answer = "crash"
            outcome.error = f"{type(exc).__name__}: {exc}"
            continue
        pending.append((outcome, prepared.tensor))
        if len(pending) >= BATCH:
            flush()
    flush()
    return outcomes


def _pct(k: int, n: int) -> float:
    return round(100.0 * k / n, 2) if n else 0.0


def _digit_row(name: str, group: Sequence[Outcome]) -> Row:
    n = len(group)
    return Row(
        name,
        n,
        digit_accuracy=_pct(sum(o.digit_right for o in group), n),
        sum_accuracy=_pct(sum(o.sum_right for o in group), n),
        refused=_pct(sum(o.answer == "no_digit" for o in group), n),
        errors=_pct(sum(o.answer in ("error", "crash") for o in group), n),
    )


def _negative_row(name: str, group: Sequence[Outcome]) -> Row:
    n = len(group)
    return Row(
        name,
        n,
        refused=_pct(sum(o.answer == "no_digit" for o in group), n),
        errors=_pct(sum(o.answer in ("error", "crash") for o in group), n),
    )


def _grouped(outcomes: Iterable[Outcome], key: str) -> dict[str, list[Outcome]]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[str(getattr(o, key))].append(o)
    return groups


def report(outcomes: list[Outcome], split: str, model: str) -> FieldReport:
    """The tables: digits per scene and overall, per glyph family, negatives per kind."""
    digits = [o for o in outcomes if o.kind == "digit"]
    negatives = [o for o in outcomes if o.kind != "digit"]
    by_scene = _grouped(digits, "scene")
    families = _grouped(digits, "source")
    by_family: dict[str, list[Outcome]] = defaultdict(list)
    for name, group in families.items():
        by_family[name.split(":")[0]].extend(group)
    blanks = _grouped([o for o in negatives if o.kind == "blank"], "scene")
    read = [o for o in digits if o.answer == "read" and o.digit_confidence is not None]
    ece = (
        expected_calibration_error(
            torch.tensor([float(o.digit_confidence or 0.0) for o in read]),
            torch.tensor([o.digit_right for o in read]),
        )
        if read
        else None
    )
    return FieldReport(
        split=split,
        model=model,
        scenes=[_digit_row(s, g) for s, g in sorted(by_scene.items())],
        overall=_digit_row("all", digits) if digits else None,
        families=[_digit_row(f, g) for f, g in sorted(by_family.items())],
        negatives=[_negative_row(k, g) for k, g in sorted(_grouped(negatives, "kind").items())]
        + ([_negative_row("all", negatives)] if negatives else []),
        blank_by_scene=[_negative_row(s, g) for s, g in sorted(blanks.items())],
        digit_ece=ece,
        outcomes=outcomes,
    )


def format_report(rep: FieldReport) -> str:
    """The report as Markdown tables."""
    lines = [f"Field set, {rep.split} split, model {rep.model}", ""]
    lines += [
        "| digits: scene | n | digit % | sum % | refused as no_digit % | error or crash % |",
        "|---|---|---|---|---|---|",
    ]
    named = [(r.name, r) for r in rep.scenes]
    named += [("**all**", rep.overall)] if rep.overall else []
    named += [(f"glyphs: {r.name}", r) for r in rep.families]
    for name, r in named:
        lines.append(
            f"| {name} | {r.n} | {r.digit_accuracy:.1f} | {r.sum_accuracy:.1f} "
            f"| {r.refused:.1f} | {r.errors:.1f} |"
        )
    if rep.digit_ece is not None:
        lines += ["", f"Expected calibration error of digit_confidence on the digits read: "
                  f"{100 * rep.digit_ece:.1f} % (15 bins)"]  # fmt: skip
    lines += ["", "| negatives: kind | n | refused as no_digit % | error or crash % |"]
    lines += ["|---|---|---|---|"]
    lines += [f"| {r.name} | {r.n} | {r.refused:.1f} | {r.errors:.1f} |" for r in rep.negatives]
    crashes = [o for o in rep.outcomes if o.answer == "crash"]
    if crashes:
        lines += ["", f"{len(crashes)} image(s) crashed the pipeline (a 500), e.g. "
                  f"{crashes[0].file}: {crashes[0].error}"]  # fmt: skip
    if rep.blank_by_scene:
        lines += ["", "| blank paper: scene | n | refused as no_digit % |", "|---|---|---|"]
        lines += [f"| {r.name} | {r.n} | {r.refused:.1f} |" for r in rep.blank_by_scene]
    return "\n".join(lines)


def evaluate_field(
    split_dir: Path,
    model_path: Path,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    seed: int = 0,
    device: str = "cpu",
) -> FieldReport:
    """Load the model as the service does and report on one split's folder."""
    model = load_model(model_path, torch.device(device))
    split = split_dir.name
    return report(run(split_dir, model, max_pixels, seed), split, str(model_path))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.field_eval", description=__doc__.split("\n")[0]
    )
    p.add_argument("--field-dir", type=Path, default=Path("data/field"),
                   help="the field set's folder (default: data/field)")  # fmt: skip
    p.add_argument("--split", default="heldout", help="split to read (default: heldout)")
    p.add_argument("--model", type=Path, default=Path("models/digitsum.pt"),
                   help="checkpoint (default: models/digitsum.pt)")  # fmt: skip
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"pixel limit (default: {DEFAULT_MAX_IMAGE_PIXELS:,})")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the addends (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    p.add_argument("--misses", type=Path, default=None,
                   help="write each missed digit and read negative here (JSON lines)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rep = evaluate_field(
        args.field_dir / args.split, args.model, args.max_pixels, args.seed, args.device
    )
    print(format_report(rep))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rep.summary(), indent=2) + "\n")
    if args.misses is not None:
        wrong = [
            o
            for o in rep.outcomes
            if (o.kind == "digit" and not o.digit_right)
            or (o.kind != "digit" and o.answer == "read")
        ]
        args.misses.write_text("".join(json.dumps(asdict(o)) + "\n" for o in wrong))
    return 0


if __name__ == "__main__":
    sys.exit(main())
