"""An image with no digit in it is answered 422 no_digit, not with a guessed digit and sum.

The model's not-a-digit head decides for shapes (letters, symbols, scribbles), at the threshold
its card carries (chosen on validation data) unless DIGITSUM_NO_DIGIT_THRESHOLD overrides it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.inference import load_model
from app.main import create_app
from tests.conftest import MODEL_PATH, make_settings
from tests.imagegen import encode, mnist_png
from training.data import Split


def _drawn(strokes: list[list[tuple[float, float]]], width: int = 14) -> bytes:
    """Dark strokes on white, as the page's pad or a marker on paper draws them: (x, y) in 0..1."""
    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        draw.line([(x * 280, y * 280) for x, y in stroke], fill=0, width=width, joint="curve")
    return encode(image)


# Shapes no reader should take for a digit.
STAR = _drawn([[(0.5, 0.1), (0.5, 0.9)], [(0.15, 0.3), (0.85, 0.7)], [(0.85, 0.3), (0.15, 0.7)]])
LETTER_A = _drawn([[(0.15, 0.9), (0.5, 0.1), (0.85, 0.9)], [(0.3, 0.6), (0.7, 0.6)]])
HASH = _drawn(
    [
        [(0.35, 0.1), (0.3, 0.9)],
        [(0.7, 0.1), (0.65, 0.9)],
        [(0.1, 0.35), (0.9, 0.35)],
        [(0.1, 0.65), (0.9, 0.65)],
    ]
)
NOT_DIGITS = {"star": STAR, "letter A": LETTER_A, "hash": HASH}


@pytest.fixture(scope="module")
def never_refusing() -> Iterator[TestClient]:
    """The same model with the setting that turns the model's refusals off."""
    app = create_app(make_settings(no_digit_threshold=1.0))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("name", sorted(NOT_DIGITS))
def test_a_shape_that_is_not_a_digit_is_answered_no_digit(client: TestClient, name: str) -> None:
    response = client.post(
        "/predict",
        files={"image": ("shape.png", NOT_DIGITS[name], "image/png")},
        data={"number": "3"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "no_digit"
    assert error["field"] == "image"
    assert "digit" in error["message"]
    assert "input_png" not in error  # only when asked for


def test_no_digit_shows_what_the_model_saw_when_asked(client: TestClient) -> None:
    response = client.post(
        "/predict?include_input=true",
        files={"image": ("star.png", STAR, "image/png")},
        data={"number": "3"},
    )
    assert response.status_code == 422
    seen = Image.open(io.BytesIO(base64.b64decode(response.json()["error"]["input_png"])))
    assert seen.size == (28, 28)


def test_the_threshold_setting_turns_refusals_off(never_refusing: TestClient) -> None:
    response = never_refusing.post(
        "/predict", files={"image": ("star.png", STAR, "image/png")}, data={"number": "3"}
    )
    assert response.status_code == 200, response.text
    assert 0 <= response.json()["digit"] <= 9


def test_a_batch_refuses_only_the_entry_without_a_digit(
    client: TestClient, mnist_test: Split
) -> None:
    digit = mnist_png(mnist_test.images[0])
    response = client.post(
        "/predict/batch",
        files=[("images", ("a.png", digit, "image/png")), ("images", ("b.png", STAR, "image/png"))],
        data={"numbers": ["1", "2"]},
    )
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["prediction"]["digit"] == int(mnist_test.labels[0])
    assert second["error"]["code"] == "no_digit"
    assert second["error"]["field"] == "images[1]"


def test_no_digit_answers_are_counted(client: TestClient) -> None:
    def count() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("digitsum_errors_total{") and 'code="no_digit"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    client.post("/predict", files={"image": ("h.png", HASH, "image/png")}, data={"number": "1"})
    assert count() == before + 1


def test_the_card_threshold_is_the_default_and_the_setting_overrides_it() -> None:
    card_default = load_model(MODEL_PATH, torch.device("cpu"))
    assert card_default.no_digit_threshold == card_default.card["no_digit"]["threshold"]
    assert 0.5 <= card_default.no_digit_threshold < 1.0
    refuse_all = load_model(MODEL_PATH, torch.device("cpu"), no_digit_threshold=0.0)
    predictions = refuse_all.predict(torch.rand(4, 1, 28, 28), torch.arange(4))
    assert all(p.no_digit for p in predictions)
