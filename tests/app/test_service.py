"""Health, model card, metrics, OpenAPI document, settings."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import Settings
from tests.conftest import MODEL_PATH
from tests.imagegen import mnist_png
from training.data import Split


def test_health_endpoints(client: TestClient) -> None:
    live = client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_model_card_names_the_file_and_device(client: TestClient) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json()
    assert body["sha256"] == hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert body["device"] == "cpu"
    assert body["card"]["metrics"]["digit_accuracy"] >= 0.9965
    assert body["version"] == body["card"]["version"]


def test_metrics_count_requests_predictions_and_errors(
    client: TestClient, mnist_test: Split
) -> None:
    client.post(
        "/predict",
        files={"image": ("x", mnist_png(mnist_test.images[0]), "image/png")},
        data={"number": "1"},
    )
    client.post("/predict", files={"image": ("x", b"nope", "image/png")}, data={"number": "1"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    label = int(mnist_test.labels[0])
    for needle in (
        'digitsum_requests_total{method="POST",route="/predict",status="200"}',
        "digitsum_request_duration_seconds_bucket{",
        "digitsum_inference_seconds_count",
        f'digitsum_predictions_total{{digit="{label}"}}',
        'digitsum_errors_total{code="invalid_image"}',
        "digitsum_queue_depth",
        "digitsum_queue_wait_seconds_count",
        "digitsum_batch_size_bucket",
        "digitsum_ready 1.0",
    ):
        assert needle in text, needle


def test_openapi_lists_every_endpoint_field_and_error(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/predict",
        "/predict/batch",
        "/health/live",
        "/health/ready",
        "/model",
        "/metrics",
    ):
        assert path in paths, path
    predict = paths["/predict"]["post"]
    form = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["required"]) == {"image", "number"}
    image = form["properties"]["image"]
    assert image.get("format") == "binary" or image.get("contentMediaType")  # a file picker
    for status in ("200", "400", "413", "415", "422", "500", "503"):
        assert status in predict["responses"], status
    error_ref = predict["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/ErrorResponse")
    assert spec["components"]["schemas"]["PredictResponse"]["examples"]
    assert client.get("/docs").status_code == 200


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSUM_MAX_QUEUE", "zero")
    with pytest.raises(ValidationError, match="max_queue"):
        Settings()
    monkeypatch.setenv("DIGITSUM_MAX_QUEUE", "8")
    monkeypatch.setenv("DIGITSUM_DEVICE", "gpu")
    with pytest.raises(ValidationError, match="device"):
        Settings()
