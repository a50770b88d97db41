"""Digits drawn stroke by stroke with the mouse on the try-it page, and the answers it shows.

    .venv/bin/python -m pytest tests/e2e/test_drawing.py

Issue 12's bar for drawings: >= 99 % read correctly. The drawings (tests/e2e/strokes.py) are
several styles of each digit, each drawn several times with a hand's variation, all in one tab:
draw, pick a number, ask the model, read the digit and the sum off the page, clear, go on.
With DIGITSUM_UPDATE_SCREENSHOT=1 the first 7 with a bar is also saved as
docs/img/drawing-7-bar.png, the picture in the docs.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.strokes import NOT_DIGITS, Drawing, Stroke, drawings, place
from tests.e2e.test_try_it_page import lit_pixels, pick_number

pytestmark = pytest.mark.slow

PER_DIGIT = 10
DRAWINGS = drawings(PER_DIGIT)
REQUIRED_SHARE = 0.99
# Styles that MNIST-trained readers are known to confuse (issue 12: a 1 with a flag read as a 7,
# and back): every drawing of these must be read.
REQUIRED_STYLES = [(1, "flag"), (1, "flag and base"), (7, "plain"), (7, "bar")]
# The 100 drawings take about 2 minutes on 2 idle cores; the timeout leaves room for a machine
# that is busy with other work (all of it lands in the first test's setup).
DRAWING_TIMEOUT_S = 900
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "drawing-7-bar.png"

# Once the page is done (the form is aria-busy from the click's own handler until the answer or
# the error is fully shown), everything it shows; until then false. So a previous drawing's
# answer, still on screen, is never read.
SHOWN_ANSWER_JS = """() => {
    if (document.getElementById("ask").getAttribute("aria-busy") === "true") return false;
    const text = (id) => document.getElementById(id).textContent.trim();
    const error = document.getElementById("error");
    if (!error.hidden) return { error: error.innerText.trim() };
    if (document.getElementById("result").hidden) return false;
    return { digit: text("res-digit"), number: text("res-number"), sum: text("res-sum") };
}"""


@dataclass(frozen=True)
class Answer:
    """What the page showed for one drawing."""

    drawing: Drawing
    number: int
    digit: str | None  # as shown, None when the page showed an error
    sum: str | None
    error: str | None

    @property
    def correct(self) -> bool:
        expected = self.drawing.digit
        return self.digit == str(expected) and self.sum == str(expected + self.number)

    def describe(self) -> str:
        shown = f"error {self.error!r}" if self.error else f"digit {self.digit}, sum {self.sum}"
        return f"{self.drawing.name} + {self.number}: {shown}"


def draw(page: Page, strokes: list[Stroke], step: float) -> None:
    """Mouse down, move through the points (one pointer event per `step` of the pad), up."""
    box = page.locator("#pad").bounding_box()
    assert box is not None, "the drawing pad is not on screen"
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for (x0, y0), (x1, y1) in pairwise(points):
            travel = math.hypot(x1 - x0, y1 - y0) / box["width"]
            page.mouse.move(x1, y1, steps=max(1, round(travel / step)))
        page.mouse.up()


def ask(page: Page) -> dict[str, str]:
    """Click "Ask the model" and return what the page shows once it is done."""
    page.locator("#submit").click()
    shown: dict[str, str] = page.wait_for_function(SHOWN_ANSWER_JS).json_value()
    return shown


@pytest.fixture(scope="module")
def answers(module_page: Page, artifacts_dir: Path) -> list[Answer]:
    """Every drawing drawn, asked and read in one tab."""
    page = module_page
    page.goto("/")
    numbers = random.Random(7)
    shot_taken = False
    read: list[Answer] = []
    # One line per answer as it comes, so that a run cut short still says what it read.
    with (artifacts_dir / "drawing-answers.txt").open("w") as log:
        for drawing in DRAWINGS:
            page.locator("#clear").click()
            draw(page, drawing.strokes, drawing.step)
            number = numbers.randrange(10)
            pick_number(page, number)
            shown = ask(page)
            read.append(
                Answer(
                    drawing=drawing,
                    number=number,
                    digit=shown.get("digit"),
                    sum=shown.get("sum"),
                    error=shown.get("error"),
                )
            )
            print(
                ("ok   " if read[-1].correct else "MISS ") + read[-1].describe(),
                file=log,
                flush=True,
            )
            if (drawing.digit, drawing.style) == (7, "bar") and not shot_taken:
                shot = artifacts_dir / "drawing-7-bar.png"
                page.screenshot(path=shot, full_page=True)
                shot_taken = True
                if os.environ.get("DIGITSUM_UPDATE_SCREENSHOT") == "1":
                    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                    shutil.copyfile(shot, DOCS_SCREENSHOT)
    return read


def test_drawings_cover_every_digit_in_several_styles() -> None:
    assert len(DRAWINGS) >= 100
    for digit in range(10):
        styles = {drawing.style for drawing in DRAWINGS if drawing.digit == digit}
        assert len(styles) >= 2, f"{digit} is drawn in only {styles}"
    for digit, style in REQUIRED_STYLES:
        assert any(d.digit == digit and d.style == style for d in DRAWINGS), (digit, style)


@pytest.mark.timeout(DRAWING_TIMEOUT_S)
def test_drawn_digits_are_read(answers: list[Answer]) -> None:
    misses = [answer for answer in answers if not answer.correct]
    share = 1 - len(misses) / len(answers)
    assert share >= REQUIRED_SHARE, (
        f"{share:.1%} of {len(answers)} drawings read correctly (digit, and sum = digit + "
        f"number), below {REQUIRED_SHARE:.0%}; misses:\n"
        + "\n".join(answer.describe() for answer in misses)
    )


@pytest.mark.timeout(DRAWING_TIMEOUT_S)
@pytest.mark.parametrize(
    ("digit", "style"), REQUIRED_STYLES, ids=[f"{d} {s}" for d, s in REQUIRED_STYLES]
)
def test_required_style_is_read(answers: list[Answer], digit: int, style: str) -> None:
    of_style = [a for a in answers if (a.drawing.digit, a.drawing.style) == (digit, style)]
    misses = [answer.describe() for answer in of_style if not answer.correct]
    assert misses == [], f"{len(misses)} of {len(of_style)} drawings of a {digit} ({style}) misread"


@pytest.mark.parametrize("shape", list(NOT_DIGITS))
def test_shape_that_is_not_a_digit_is_told_so(page: Page, artifacts_dir: Path, shape: str) -> None:
    page.goto("/")
    strokes = place(NOT_DIGITS[shape], random.Random(shape))
    draw(page, strokes, step=0.02)
    assert lit_pixels(page, "#pad") > 1000
    shown = ask(page)
    page.screenshot(path=artifacts_dir / f"drawing-not-a-digit-{shape}.png", full_page=True)
    assert "error" in shown, f"a {shape} was read as a digit: {shown}"
    expect(page.get_by_role("alert")).to_contain_text("I don't see a digit here")
    expect(page.locator("#result")).to_be_hidden()
