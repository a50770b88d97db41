"""The try-it page at `/`, driven in a real Chromium against the real service and model.

    .venv/bin/python -m pytest tests/e2e

Screenshots land in tests/e2e/artifacts/. With DIGITSUM_UPDATE_SCREENSHOT=1 the drawn-7 one is
also copied to docs/screenshot.png, the picture in the README.
"""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import FilePayload, Page, expect

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data"
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

LIT_PIXELS_JS = """(selector) => {
    const canvas = document.querySelector(selector);
    const { width, height } = canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i] + data[i + 1] + data[i + 2] > 0) lit++;
    }
    return lit;
}"""

# Strokes as fractions of the pad's side, drawn with mouse down/move/up like a person would.
# Upright, centred and filling most of the pad, like MNIST's digits after their normalisation.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    1: [[(0.52, 0.16), (0.50, 0.50), (0.48, 0.84)]],
    7: [[(0.26, 0.22), (0.74, 0.22), (0.56, 0.50), (0.42, 0.84)]],
}


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    box = page.locator("#pad").bounding_box()
    assert box is not None, "the drawing pad is not on screen"
    for stroke in strokes:
        points = [
            (box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke
        ]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=15)
        page.mouse.up()


def pick_number(page: Page, number: int) -> None:
    page.locator(f'#numbers input[value="{number}"] + span').click()
    expect(page.locator(f'#numbers input[value="{number}"]')).to_be_checked()


def ask_and_wait(page: Page) -> None:
    """Submit, then wait for either an answer or an error; fail with the error's text."""
    page.locator("#submit").click()
    wait_for_answer(page)


def wait_for_answer(page: Page) -> None:
    # The form is aria-busy from the submit (set before its first await) until the answer or
    # the error is fully shown, so this also waits out a previous answer still on screen.
    page.wait_for_selector('#ask:not([aria-busy="true"])')
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")
    if page.locator("#error").is_visible():
        pytest.fail(f"the page shows an error instead of an answer: {page.inner_text('#error')}")


def shown_int(page: Page, test_id: str) -> int:
    return int(page.get_by_test_id(test_id).inner_text())


def lit_pixels(page: Page, selector: str) -> int:
    """How many pixels of a canvas have any brightness (0 for an all-black or empty canvas)."""
    return int(page.evaluate(LIT_PIXELS_JS, selector))


def assert_answer(page: Page, digit: int, number: int) -> None:
    expect(page.get_by_test_id("digit")).to_have_text(str(digit))
    expect(page.get_by_test_id("number")).to_have_text(str(number))
    assert shown_int(page, "sum") == shown_int(page, "digit") + shown_int(page, "number")
    expect(page.get_by_test_id("consistency")).to_contain_text(
        f"agrees with the digit read: {digit} + {number} = {digit + number}"
    )
    expect(page.get_by_test_id("digit-confidence")).to_contain_text("%")
    expect(page.get_by_test_id("sum-confidence")).to_contain_text("%")
    # The 28x28 image the model saw is shown, and has a digit in it.
    expect(page.locator("#seen")).to_be_visible()
    seen = page.evaluate(
        "() => { const c = document.getElementById('seen'); return [c.width, c.height]; }"
    )
    assert seen == [28, 28]
    assert 20 < lit_pixels(page, "#seen") < 28 * 28 / 2


@pytest.mark.parametrize(("digit", "number"), [(7, 5), (1, 9)])
def test_drawn_digit_shows_digit_and_sum(
    page: Page, artifacts_dir: Path, digit: int, number: int
) -> None:
    page.goto("/")
    draw(page, STROKES[digit])
    assert lit_pixels(page, "#pad") > 1000
    pick_number(page, number)
    ask_and_wait(page)
    shot = artifacts_dir / f"drawn-{digit}-plus-{number}.png"
    page.screenshot(path=shot, full_page=True)  # before asserting, so a failure leaves one too
    assert_answer(page, digit, number)
    if digit == 7 and os.environ.get("DIGITSUM_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)


@pytest.mark.parametrize(
    ("file_name", "digit"),
    [("mnist-t10k-00001-label-2.png", 2), ("mnist-t10k-00004-label-4.png", 4)],
)
def test_uploaded_mnist_png_shows_digit_and_sum(
    page: Page, artifacts_dir: Path, file_name: str, digit: int
) -> None:
    page.goto("/")
    page.set_input_files("#file", DATA / file_name)
    expect(page.locator("#source-status")).to_contain_text(file_name)
    pick_number(page, 3)
    ask_and_wait(page)
    page.screenshot(path=artifacts_dir / f"uploaded-{digit}-plus-3.png", full_page=True)
    assert_answer(page, digit, 3)


def test_dropped_image_is_used_and_drawing_takes_over_again(page: Page) -> None:
    page.goto("/")
    png = (DATA / "mnist-t10k-00001-label-2.png").read_bytes()
    dropped = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" });
            transfer.items.add(file);
            return transfer;
        }""",
        list(png),
    )
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.locator("#source-status")).to_contain_text("dropped.png")
    assert lit_pixels(page, "#pad") > 0  # the preview
    pick_number(page, 0)
    ask_and_wait(page)
    assert_answer(page, 2, 0)
    # Drawing on the pad drops the file: the drawing is what is sent next.
    draw(page, STROKES[1])
    expect(page.locator("#source-status")).to_have_text("Drawing on the pad.")
    ask_and_wait(page)
    assert_answer(page, 1, 0)


def test_file_that_is_not_an_image_shows_plain_error(page: Page, artifacts_dir: Path) -> None:
    page.goto("/")
    notes: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"words\n"}
    page.set_input_files("#file", files=[notes])
    page.locator("#submit").click()
    error = page.get_by_role("alert")
    expect(error).to_be_visible()
    expect(error).to_contain_text("That file is not an image the service can read.")
    expect(error).to_contain_text("Reference: ")
    expect(page.locator("#result")).to_be_hidden()
    page.screenshot(path=artifacts_dir / "error-not-an-image.png", full_page=True)


def test_file_over_the_upload_limit_says_too_big(page: Page) -> None:
    page.goto("/")
    # Just over the service's default DIGITSUM_MAX_UPLOAD_BYTES (20 MiB).
    oversized = b"\x89PNG\r\n\x1a\n" + bytes(20 * 1024 * 1024)
    huge: FilePayload = {"name": "huge.png", "mimeType": "image/png", "buffer": oversized}
    page.set_input_files("#file", files=[huge])
    page.locator("#submit").click()
    # Refused with a 413, or (if the service closes the connection mid-upload) cut off:
    # either way the person reads that the file is too big.
    expect(page.get_by_role("alert")).to_contain_text("too big")


def test_submit_without_drawing_asks_for_a_digit(page: Page) -> None:
    page.goto("/")
    page.locator("#submit").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Draw a digit on the pad first, or choose an image."
    )


def test_clear_empties_the_pad(page: Page) -> None:
    page.goto("/")
    draw(page, STROKES[1])
    assert lit_pixels(page, "#pad") > 0
    page.locator("#clear").click()
    assert lit_pixels(page, "#pad") == 0


def test_keyboard_alone_reaches_every_control(page: Page) -> None:
    page.goto("/")
    reached: list[str] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                """() => {
                    const el = document.activeElement;
                    return el.id || (el.name ? `${el.name}=${el.value}` : el.textContent.trim());
                }"""
            )
        )
    for control in ("API docs", "clear", "file", "number=5", "submit"):
        assert control in reached, f"Tab never reached {control!r}: {reached}"
    # Arrow keys move within the number picker; Enter on the button asks the model.
    page.locator('#numbers input[value="5"]').focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator('#numbers input[value="6"]')).to_be_checked()
    page.set_input_files("#file", DATA / "mnist-t10k-00004-label-4.png")
    page.locator("#submit").focus()
    page.keyboard.press("Enter")
    wait_for_answer(page)
    assert_answer(page, 4, 6)


def test_phone_sized_viewport_fits_and_works(page: Page, artifacts_dir: Path) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto("/")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a phone"
    pad = page.locator("#pad").bounding_box()
    assert pad is not None
    assert pad["width"] >= 250, f"the pad is only {pad['width']} px wide on a phone"
    assert pad["x"] >= 0
    assert pad["x"] + pad["width"] <= 375
    for height in page.locator("#numbers span").evaluate_all(
        "spans => spans.map(s => s.getBoundingClientRect().height)"
    ):
        assert height >= 40, "number buttons are too small to tap"
    draw(page, STROKES[7])
    pick_number(page, 2)
    ask_and_wait(page)
    page.screenshot(path=artifacts_dir / "phone-drawn-7-plus-2.png", full_page=True)
    assert_answer(page, 7, 2)


class _PageAudit(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, inline styles, foreign URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "style":
            self.problems.append("a <style> element")
        if tag == "script":
            self._in_script = True
            if not named.get("src"):
                self.problems.append("a <script> without src")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"an inline {name}= on <{tag}>")
            if name in ("src", "href") and value and not value.startswith("/"):
                self.problems.append(f"<{tag} {name}={value!r}> is not served by this app")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("an inline script body")


def test_page_and_its_files_are_served_by_the_app(service_url: str) -> None:
    with httpx.Client(base_url=service_url) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        audit = _PageAudit()
        audit.feed(index.text)
        assert audit.problems == []
        assert 'href="/docs"' in index.text
        for path, media_type in [
            ("/static/app.js", "text/javascript; charset=utf-8"),
            ("/static/style.css", "text/css; charset=utf-8"),
            ("/static/favicon.svg", "image/svg+xml"),
        ]:
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == media_type, path
        for path in ("/static/missing.js", "/static/.hidden.js", "/static/index"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found", path
