"""The photo pipeline's regression set: a few hundred field-set photos with the answers the
service gives them, committed, so that a change to app/ink.py shows which answers it moved and
which rule moved them.

    python -m training.pipeline_regression --check [--set haze=0.25 ...]   # what tests/ run
    python -m training.pipeline_regression --record                        # accept the answers
    python -m training.pipeline_regression --make                          # new images + record

`--make` (`make regression-set`) writes a train-source field set (training.fieldset: the
train glyph sources only, a seed of its own, images capped in size so that the set stays a few
MB) into tests/data/regression/ and records its answers in `expected.jsonl`. `--check` reads every
image as the service does (app.imaging.prepare_image with the pipeline's tuned numbers, then
the shipped model), compares with `expected.jsonl`, and prints each moved answer: the image,
what it shows, the answer before and after, and the rule that refused it on either side
(app.ink.RULES, `blank_frame`, or `model` for the not-a-digit head). `--set NAME=VALUE`
changes one of app/ink_params.py's numbers for the run, to see what a change would do before
making it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from app.inference import load_model
from app.ink_params import PARAMS, InkParams
from training import field_eval, fieldset

ROOT = Path(__file__).resolve().parents[1]
SET_DIR = ROOT / "tests" / "data" / "regression"
MODEL = ROOT / "models" / "digitsum.pt"
EXPECTED = "expected.jsonl"
# The set: digit images (negatives are fieldset's share of them, 400/1500), its own seed (the
# pipeline was tuned on train-source seeds 0-25), images capped at this side (a few MB in all).
COUNT = 180
SEED = 40
MAX_SIDE = 224
SPLIT = "train"


@dataclass(frozen=True)
class Answer:
    """What the service answered for one image, as recorded."""

    file: str
    what: str  # the scene for a digit, the kind for a negative
    label: int | None
    answer: str  # "read", "no_digit", "error" or "crash"
    digit: int | None
    sum: int | None
    rule: str | None

    def shown(self) -> str:
        if self.answer == "read":
            return f"read {self.digit} (sum {self.sum})"
        return f"{self.answer} ({self.rule})" if self.rule else self.answer


@dataclass(frozen=True)
class Moved:
    """One answer that is no longer what was recorded."""

    before: Answer
    after: Answer

    @property
    def rule(self) -> str:
        """The rule that moved it: the one that refuses it now, or the one that refused it
        before; a digit read differently moved through the pixels the pipeline made."""
        return self.after.rule or self.before.rule or "pixels"

    def line(self) -> str:
        label = "-" if self.before.label is None else str(self.before.label)
        return (
            f"{self.before.file:36} {self.before.what:18} label {label:>2}  "
            f"{self.before.shown():28} -> {self.after.shown():28} [{self.rule}]"
        )


def answers(set_dir: Path = SET_DIR, params: InkParams = PARAMS) -> list[Answer]:
    """Every image of the set read as the service reads it (field_eval.run's path)."""
    torch.set_num_threads(1)
    model = load_model(MODEL, torch.device("cpu"))
    return [
        Answer(
            o.file,
            o.scene if o.kind == "digit" and o.scene else o.kind,
            o.label,
            o.answer,
            o.digit if o.answer == "read" else None,
            o.sum if o.answer == "read" else None,
            o.rule,
        )
        for o in field_eval.run(set_dir / SPLIT, model, params=params)
    ]


def read_expected(set_dir: Path = SET_DIR) -> list[Answer]:
    path = set_dir / EXPECTED
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make it with `make regression-set`")
    return [Answer(**json.loads(line)) for line in path.read_text().splitlines() if line]


def record(found: list[Answer], set_dir: Path = SET_DIR) -> None:
    lines = [json.dumps(dataclasses.asdict(a), sort_keys=True) for a in found]
    tmp = set_dir / (EXPECTED + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(set_dir / EXPECTED)  # atomic: a half-written record is never read


def moved(expected: list[Answer], found: list[Answer]) -> list[Moved]:
    if [a.file for a in expected] != [a.file for a in found]:
        raise ValueError("the set's images are not those recorded: run `make regression-set`")
    return [Moved(e, f) for e, f in zip(expected, found, strict=True) if e != f]


def report(changes: list[Moved], total: int) -> str:
    """The moved answers, one a line, and how many each rule moved."""
    if not changes:
        return f"regression set: all {total} answers as recorded"
    by_rule = Counter(change.rule for change in changes)
    rules = ", ".join(f"{rule} {n}" for rule, n in by_rule.most_common())
    lines = [f"regression set: {len(changes)} of {total} answers moved (by rule: {rules})"]
    lines += [change.line() for change in changes]
    return "\n".join(lines)


def make(set_dir: Path = SET_DIR) -> None:
    """New images (fieldset, deterministic), then their answers recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        fieldset.main(
            [
                "--out",
                tmp,
                "--split",
                SPLIT,
                "--seed",
                str(SEED),
                "--count",
                str(COUNT),
                "--max-side",
                str(MAX_SIDE),
            ]
        )
        if set_dir.exists():
            shutil.rmtree(set_dir)
        shutil.copytree(tmp, set_dir)
    record(answers(set_dir), set_dir)


def _with_settings(pairs: Sequence[str]) -> InkParams:
    """PARAMS with NAME=VALUE changes (each value of its field's type)."""
    params = PARAMS
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in {f.name for f in dataclasses.fields(InkParams)}:
            raise SystemExit(f"--set {pair}: no tuned number {name!r} in app/ink_params.py")
        kind = type(getattr(PARAMS, name))
        params = dataclasses.replace(params, **{name: kind(value)})
    return params


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.pipeline_regression", description=__doc__.split("\n")[0]
    )
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="compare with the recorded answers")
    action.add_argument("--record", action="store_true", help="record the answers as they are")
    action.add_argument("--make", action="store_true", help="new images, then --record")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a tuned number of app/ink_params.py for this run (with --check)",
    )
    args = p.parse_args(argv)
    if args.make:
        make()
        print(f"regression set: {len(read_expected())} images in {SET_DIR}")
        return 0
    found = answers(params=_with_settings(args.set))
    if args.record:
        record(found)
        print(f"regression set: {len(found)} answers recorded")
        return 0
    changes = moved(read_expected(), found)
    print(report(changes, len(found)))
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
