"""Settings that only work together are checked together at start-up, naming both."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import FORM_PARTS_HEADROOM, Settings
from app.main import create_app
from tests.conftest import make_settings
from tests.imagegen import mnist_png
from training.data import Split


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"max_batch_images": 600}, ("DIGITSUM_MAX_BATCH_IMAGES", "DIGITSUM_MAX_QUEUE")),
        (
            {"max_batch_images": 300, "max_queue": 1000},
            ("DIGITSUM_MAX_BATCH_IMAGES", "DIGITSUM_MAX_DECODE_QUEUE"),
        ),
        (
            {"max_upload_bytes": 64 * 2**20, "max_inflight_bytes": 32 * 2**20},
            ("DIGITSUM_MAX_UPLOAD_BYTES", "DIGITSUM_MAX_INFLIGHT_BYTES"),
        ),
        ({"max_requests": 5000}, ("DIGITSUM_MAX_REQUESTS", "DIGITSUM_MAX_CONNECTIONS")),
        (
            {"batch_max_wait_ms": 600, "inference_timeout_s": 0.5},
            ("DIGITSUM_BATCH_MAX_WAIT_MS", "DIGITSUM_INFERENCE_TIMEOUT_S"),
        ),
        (
            {"batch_gather_ms": 600, "inference_timeout_s": 0.5},
            ("DIGITSUM_BATCH_GATHER_MS", "DIGITSUM_INFERENCE_TIMEOUT_S"),
        ),
        (
            {"inference_timeout_s": 30, "graceful_timeout_s": 20},
            ("DIGITSUM_INFERENCE_TIMEOUT_S", "DIGITSUM_GRACEFUL_TIMEOUT_S"),
        ),
    ],
)
def test_settings_that_cannot_work_together_are_refused_naming_both(
    values: dict[str, object], named: tuple[str, str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    message = str(caught.value)
    for name in named:
        assert name in message


def test_the_form_part_cap_follows_the_batch_limit() -> None:
    assert Settings().max_form_parts == FORM_PARTS_HEADROOM * 2 * 256
    assert Settings(
        max_batch_images=2048, max_queue=4096, max_decode_queue=2048
    ).max_form_parts == (FORM_PARTS_HEADROOM * 2 * 2048)


def test_defaults_and_their_edges_work_together() -> None:
    Settings()
    Settings(max_batch_images=512, max_queue=512, max_decode_queue=512)
    Settings(inference_timeout_s=20, graceful_timeout_s=20)


def test_a_batch_at_its_limit_is_answered_whatever_the_limit(mnist_test: Split) -> None:
    """Above 500 images the old fixed cap of 1,000 form parts answered 400 'parts'."""
    settings = make_settings(max_batch_images=600, max_queue=1024, max_decode_queue=600)
    png = mnist_png(mnist_test.images[0])
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/predict/batch",
            files=[("images", (f"{i}.png", png, "image/png")) for i in range(600)],
            data={"numbers": ["4"] * 600},
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 600
    assert {r["prediction"]["digit"] for r in results} == {int(mnist_test.labels[0])}
