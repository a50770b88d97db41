"""One request never fails another: an image that breaks our own code fails alone.

Poison here is made on purpose (a pipeline step or the forward pass patched to raise on one
marked input), because every real poison found so far is fixed: the mechanism must hold for the
next bug too. The requests run concurrently and share batches, as they do under load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app import ink
from app.imaging import prepare_batch
from app.main import create_app
from app.state import ServiceState
from tests.conftest import make_settings
from tests.imagegen import encode, mnist_png
from training.data import Split

# Long enough that the concurrent requests below gather into shared batches.
GATHER_MS = 50
POISONED = 8
GOOD = 56


@pytest.fixture(scope="module")
def gathering_client() -> Iterator[TestClient]:
    settings = make_settings(batch_max_wait_ms=GATHER_MS, batch_gather_ms=GATHER_MS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def good(mnist_test: Split) -> list[tuple[bytes, int]]:
    return [(mnist_png(mnist_test.images[i]), int(mnist_test.labels[i])) for i in range(GOOD)]


def _metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _batch_sizes_over_one(client: TestClient) -> float:
    """Forward passes of more than one image so far (the batch-size histogram)."""
    return _metric(client, "digitsum_batch_size_count") - _metric(
        client, 'digitsum_batch_size_bucket{le="1.0"}'
    )


def _post_all(client: TestClient, uploads: list[tuple[bytes, str]]) -> list[object]:
    def post(upload: tuple[bytes, str]) -> object:
        data, request_id = upload
        return client.post(
            "/predict",
            files={"image": ("x.png", data, "image/png")},
            data={"number": "3"},
            headers={"X-Request-ID": request_id},
        )

    with ThreadPoolExecutor(len(uploads)) as pool:
        return list(pool.map(post, uploads))


def _check_round(
    client: TestClient,
    good: list[tuple[bytes, int]],
    poison: bytes,
    stage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """64 concurrent requests, 8 of them poison spread among the good: every good one answered
    with its digit, every poisoned one 500 with its own request id, each traceback logged once
    under that id and counted by stage."""
    uploads = [(png, f"good-{i}") for i, (png, _) in enumerate(good)]
    for k in range(POISONED):
        uploads.insert(k * 8, (poison, f"poison-{k}"))
    counted = _metric(client, f'digitsum_internal_errors_total{{stage="{stage}"}}')
    shared = _batch_sizes_over_one(client)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="digitsum"):
        responses = _post_all(client, uploads)
    answers = dict(zip((request_id for _, request_id in uploads), responses, strict=True))
    for i, (_, label) in enumerate(good):
        response = answers[f"good-{i}"]
        assert response.status_code == 200, response.text  # type: ignore[attr-defined]
        assert response.json()["sum"] == label + 3  # type: ignore[attr-defined]
    for k in range(POISONED):
        response = answers[f"poison-{k}"]
        assert response.status_code == 500, response.text  # type: ignore[attr-defined]
        error = response.json()["error"]  # type: ignore[attr-defined]
        assert error["code"] == "internal_error"
        assert error["request_id"] == f"poison-{k}"
        assert "poisoned" not in response.text  # type: ignore[attr-defined]
    logged = [r for r in caplog.records if r.exc_info and getattr(r, "stage", None) == stage]
    assert sorted(r.request_id for r in logged) == sorted(  # type: ignore[attr-defined]
        f"poison-{k}" for k in range(POISONED)
    )
    assert _metric(client, f'digitsum_internal_errors_total{{stage="{stage}"}}') == (
        counted + POISONED
    )
    assert _batch_sizes_over_one(client) > shared  # the requests did share forward passes


def _marked_photo() -> bytes:
    """A small grey PNG (decoded inside the batch, on the model thread) of a shape nothing else
    here has, which the patched pipeline step below recognises."""
    grey = np.full((37, 41), 210, np.uint8)
    grey[10:28, 18:22] = 30
    return encode(Image.fromarray(grey, mode="L"))


def _raising_on(
    shape: tuple[int, ...], real: Callable[[np.ndarray], ink.Ink]
) -> Callable[[np.ndarray], ink.Ink]:
    def step(grey: np.ndarray) -> ink.Ink:
        if grey.shape == shape:
            raise np.linalg.LinAlgError("poisoned: a bug of ours on this one image")
        return real(grey)

    return step


def test_an_image_that_breaks_the_pipeline_fails_alone(
    gathering_client: TestClient,
    good: list[tuple[bytes, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(ink, "digit_ink", _raising_on((37, 41), ink.digit_ink))
    for _ in range(3):  # the three rounds
        _check_round(gathering_client, good, _marked_photo(), "prepare", caplog)


def test_an_input_the_forward_pass_fails_on_fails_alone(
    gathering_client: TestClient,
    good: list[tuple[bytes, int]],
    mnist_test: Split,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batch is retried in halves until the one input the model raises on is alone."""
    poison = mnist_png(mnist_test.images[GOOD])
    (marked,) = prepare_batch([poison], 10**6)
    assert isinstance(marked, np.ndarray)
    service: ServiceState = gathering_client.app.state.service  # type: ignore[attr-defined]
    assert service.runtime is not None
    model = service.runtime.model
    real = model.predict

    def predict(images: torch.Tensor, numbers: torch.Tensor) -> object:
        if (images[:, 0] == torch.from_numpy(marked)).flatten(1).all(1).any():
            raise RuntimeError("poisoned: the model fails on this input")
        return real(images, numbers)

    monkeypatch.setattr(model, "predict", predict)
    _check_round(gathering_client, good, poison, "forward", caplog)


def test_batch_entry_that_breaks_the_pipeline_fails_only_itself(
    client: TestClient,
    good: list[tuple[bytes, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(ink, "digit_ink", _raising_on((37, 41), ink.digit_ink))
    (first, label_first), (last, label_last) = good[0], good[1]
    with caplog.at_level(logging.ERROR, logger="digitsum"):
        response = client.post(
            "/predict/batch",
            files=[("images", ("a.png", x, "image/png")) for x in (first, _marked_photo(), last)],
            data={"numbers": ["1", "2", "3"]},
            headers={"X-Request-ID": "batch-with-poison"},
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["prediction"]["digit"] == label_first
    assert results[2]["prediction"]["digit"] == label_last
    assert results[1]["error"]["code"] == "internal_error"
    assert results[1]["error"]["field"] == "images[1]"
    assert results[1]["error"]["request_id"] == "batch-with-poison"
    logged = [r for r in caplog.records if r.exc_info and getattr(r, "stage", None) == "prepare"]
    assert [r.request_id for r in logged] == ["batch-with-poison"]  # type: ignore[attr-defined]


def test_the_91_byte_png_is_too_small_to_hold_a_digit(
    client: TestClient, good: list[tuple[bytes, int]]
) -> None:
    """The image that took its batch down (1 x 64 pixels, grey with one dark pixel), alone and
    as a batch entry between two digits."""
    grey = np.full((64, 1), 200, np.uint8)
    grey[30, 0] = 20
    poison = encode(Image.fromarray(grey, mode="L"))
    assert len(poison) < 100
    alone = client.post(
        "/predict", files={"image": ("p.png", poison, "image/png")}, data={"number": "1"}
    )
    assert alone.status_code == 422, alone.text
    assert alone.json()["error"]["code"] == "image_too_small"
    assert "1x64" in alone.json()["error"]["message"]
    (first, label_first), (last, label_last) = good[0], good[1]
    response = client.post(
        "/predict/batch",
        files=[("images", ("a.png", x, "image/png")) for x in (first, poison, last)],
        data={"numbers": ["1", "2", "3"]},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["prediction"]["digit"] == label_first
    assert results[1]["error"]["code"] == "image_too_small"
    assert results[2]["prediction"]["digit"] == label_last
