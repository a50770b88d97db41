"""POST /predict and /predict/batch on the shipped model: MNIST PNGs, photos, formats, batches."""

from __future__ import annotations

import random

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tests.imagegen import encode, mnist_pil, mnist_png, paper_photo
from training.data import Split


def _post(
    client: TestClient, data: bytes, number: int, name: str = "d.png", ctype: str = "image/png"
) -> dict[str, object]:
    response = client.post(
        "/predict", files={"image": (name, data, ctype)}, data={"number": str(number)}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _batch(
    client: TestClient, blobs: list[bytes], numbers: list[int], ctype: str = "image/png"
) -> list[dict[str, object]]:
    files = [("images", (f"{i}.img", blob, ctype)) for i, blob in enumerate(blobs)]
    response = client.post(
        "/predict/batch", files=files, data={"numbers": [str(n) for n in numbers]}
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, object]] = response.json()["results"]
    return results


def test_predict_answers_digit_sum_and_confidences(client: TestClient, mnist_test: Split) -> None:
    label = int(mnist_test.labels[0])
    body = _post(client, mnist_png(mnist_test.images[0]), 4)
    assert body["digit"] == label
    assert body["sum"] == label + 4
    assert body["number"] == 4
    assert body["consistent"] is True
    assert 0.5 < float(body["digit_confidence"]) <= 1  # type: ignore[arg-type]
    assert 0.5 < float(body["sum_confidence"]) <= 1  # type: ignore[arg-type]
    assert body["model_version"]
    assert "input_png" not in body


def test_mnist_pngs_score_like_the_tensors(
    client: TestClient, mnist_test: Split, shipped_model: torch.jit.ScriptModule
) -> None:
    """All 10,000 test images as PNG uploads score within 0.1 point of the tensors themselves; a
    digit answered no_digit counts as a miss (at most 0.1 % of them are, as the card says)."""
    numbers = [i % 10 for i in range(len(mnist_test))]
    with torch.inference_mode():
        digit_logits, sum_logits, _ = shipped_model(mnist_test.images, torch.tensor(numbers))
    tensor_digit = float((digit_logits.argmax(1) == mnist_test.labels).float().mean())
    tensor_sum = float(
        (sum_logits.argmax(1) == mnist_test.labels + torch.tensor(numbers)).float().mean()
    )
    digit_hits = sum_hits = refused = 0
    for start in range(0, len(mnist_test), 250):
        blobs = [mnist_png(img) for img in mnist_test.images[start : start + 250]]
        for i, result in enumerate(_batch(client, blobs, numbers[start : start + 250])):
            label = int(mnist_test.labels[start + i])
            if "prediction" not in result:
                error = result["error"]
                assert isinstance(error, dict)
                assert error["code"] == "no_digit"
                refused += 1
                continue
            prediction = result["prediction"]
            assert isinstance(prediction, dict)
            digit_hits += prediction["digit"] == label
            sum_hits += prediction["sum"] == label + numbers[start + i]
    n = len(mnist_test)
    assert refused / n <= 0.001
    assert abs(digit_hits / n - tensor_digit) <= 0.001
    assert abs(sum_hits / n - tensor_sum) <= 0.001


def test_single_endpoint_agrees_with_batch_endpoint(client: TestClient, mnist_test: Split) -> None:
    blobs = [mnist_png(img) for img in mnist_test.images[:40]]
    numbers = [(7 * i) % 10 for i in range(40)]
    batched = _batch(client, blobs, numbers)
    for blob, number, result in zip(blobs, numbers, batched, strict=True):
        single = _post(client, blob, number)
        prediction = result["prediction"]
        assert isinstance(prediction, dict)
        for key in ("digit", "sum", "number", "consistent"):
            assert prediction[key] == single[key]
        for key in ("digit_confidence", "sum_confidence"):  # batch size changes the last bits
            assert prediction[key] == pytest.approx(single[key], abs=1e-4)


def test_photos_of_ink_on_paper_are_recognised(client: TestClient, mnist_test: Split) -> None:
    """Dark ink on grey paper, 4-7x larger, off-centre, blurred, RGB JPEG: >= 99% of 1,000."""
    rng = random.Random(7)
    indices = list(range(0, 10_000, 10))
    blobs = [encode(paper_photo(mnist_test.images[i], rng), "JPEG", quality=85) for i in indices]
    results = [
        r
        for start in range(0, len(blobs), 100)  # 100 photos stay under the body limit
        for r in _batch(client, blobs[start : start + 100], [3] * 100, ctype="image/jpeg")
    ]
    hits = sum(
        r["prediction"]["digit"] == int(mnist_test.labels[i])  # type: ignore[index]
        for r, i in zip(results, indices, strict=True)
    )
    assert hits / len(indices) >= 0.99


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("PNG", "L"),
        ("PNG", "LA"),
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("PNG", "I;16"),
        ("JPEG", "L"),
        ("JPEG", "RGB"),
        ("JPEG", "CMYK"),
        ("WEBP", "RGB"),
        ("WEBP", "RGBA"),
        ("BMP", "RGB"),
        ("BMP", "P"),
        ("GIF", "P"),
    ],
)
def test_formats_and_modes_are_read_alike(
    client: TestClient, mnist_test: Split, fmt: str, mode: str
) -> None:
    label = int(mnist_test.labels[1])
    image = mnist_pil(mnist_test.images[1]).resize((112, 112), Image.Resampling.BICUBIC)
    if mode == "I;16":
        converted = Image.frombytes(
            "I;16",
            image.size,
            bytes(b for v in image.tobytes() for b in (v * 257).to_bytes(2, "little")),
        )
    elif mode in ("LA", "RGBA"):
        # ink drawn on a transparent sheet: alpha carries the digit, colour is flat black
        converted = Image.new(mode, image.size)
        converted.putalpha(image)
    else:
        converted = image.convert(mode)
    params = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    body = _post(client, encode(converted, fmt, **params), 2)
    assert body["digit"] == label, (fmt, mode)


def test_exif_orientation_is_applied(client: TestClient, mnist_test: Split) -> None:
    upright = mnist_pil(mnist_test.images[2]).resize((84, 84)).convert("RGB")
    label = int(mnist_test.labels[2])
    stored = upright.transpose(Image.Transpose.ROTATE_270)  # as a rotated phone would store it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    body = _post(client, encode(stored, "JPEG", quality=95, exif=exif), 0, "p.jpg", "image/jpeg")
    assert body["digit"] == label


def test_animated_gif_uses_the_first_frame(client: TestClient, mnist_test: Split) -> None:
    first, second = mnist_pil(mnist_test.images[3]), mnist_pil(mnist_test.images[4])
    assert int(mnist_test.labels[3]) != int(mnist_test.labels[4])
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert _post(client, data, 1, "a.gif", "image/gif")["digit"] == int(mnist_test.labels[3])


def test_include_input_returns_the_28x28_image_the_model_saw(
    client: TestClient, mnist_test: Split
) -> None:
    import base64
    import io

    response = client.post(
        "/predict?include_input=true",
        files={"image": ("d.png", mnist_png(mnist_test.images[0]), "image/png")},
        data={"number": "1"},
    )
    assert response.status_code == 200
    seen = Image.open(io.BytesIO(base64.b64decode(response.json()["input_png"])))
    assert seen.size == (28, 28)
    assert seen.tobytes() == mnist_pil(mnist_test.images[0]).tobytes()


def test_batch_keeps_order_and_fails_only_the_bad_entry(
    client: TestClient, mnist_test: Split
) -> None:
    blobs = [mnist_png(mnist_test.images[i]) for i in range(5)]
    blobs[2] = b"this is not an image"
    results = _batch(client, blobs, [0, 1, 2, 3, 4])
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert results[2]["error"]["code"] == "invalid_image"  # type: ignore[index]
    assert results[2]["error"]["field"] == "images[2]"  # type: ignore[index]
    assert "prediction" not in results[2]
    for i in (0, 1, 3, 4):
        prediction = results[i]["prediction"]
        assert prediction["digit"] == int(mnist_test.labels[i])  # type: ignore[index]
        assert prediction["number"] == i  # type: ignore[index]


def test_answers_match_the_documented_models(client: TestClient, mnist_test: Split) -> None:
    """The routes write their JSON by hand (app/api/routes/predict.py); it must still be what
    /docs promises: PredictResponse and BatchResponse, strictly."""
    from app.schemas import BatchResponse, PredictResponse

    big = encode(paper_photo(mnist_test.images[5], random.Random(5)), "JPEG")  # the pool's path
    single = client.post(
        "/predict?include_input=1",
        files={"image": ("d.jpg", big, "image/jpeg")},
        data={"number": "4"},
    )
    assert single.status_code == 200
    PredictResponse.model_validate_json(single.content, strict=True)
    blobs = [mnist_png(mnist_test.images[0]), b"junk", big]
    batch = client.post(
        "/predict/batch?include_input=yes",
        files=[("images", (f"{i}", blob, "image/png")) for i, blob in enumerate(blobs)],
        data={"numbers": ["1", "2", "3"]},
    )
    assert batch.status_code == 200
    parsed = BatchResponse.model_validate_json(batch.content, strict=True)
    assert [r.prediction is None for r in parsed.results] == [False, True, False]
    assert parsed.results[2].prediction.input_png  # type: ignore[union-attr]
