"""Health, model card, metrics, OpenAPI document, settings."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app import metrics
from app.config import Settings
from app.main import create_app
from tests.conftest import MODEL_PATH, make_settings
from tests.imagegen import mnist_png
from tests.scrape import value as scrape_value
from tests.training.test_checkpoint import DIGIT_BAR
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
    assert body["engine"] == "onnxruntime"  # the default on a CPU (DIGITSUM_CPU_ENGINE)
    assert body["card"]["metrics"]["digit_accuracy"] >= DIGIT_BAR
    assert body["version"] == body["card"]["version"]


def test_torchscript_engine_is_a_setting_and_answers_alike(
    client: TestClient, mnist_test: Split
) -> None:
    """DIGITSUM_CPU_ENGINE=torchscript serves the checkpoint's own module: the same answers,
    confidences to their rounding, as the default engine."""
    pngs = [mnist_png(mnist_test.images[i]) for i in range(16)]
    files = [("images", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    form = {"numbers": [str(i % 10) for i in range(16)]}
    default = client.post("/predict/batch", files=files, data=form).json()["results"]
    with TestClient(create_app(make_settings(cpu_engine="torchscript"))) as own:
        assert own.get("/model").json()["engine"] == "torchscript"
        theirs = own.post("/predict/batch", files=files, data=form).json()["results"]
    assert [r["prediction"]["digit"] for r in theirs] == [r["prediction"]["digit"] for r in default]
    assert [r["prediction"]["sum"] for r in theirs] == [r["prediction"]["sum"] for r in default]
    for a, b in zip(theirs, default, strict=True):
        assert a["prediction"]["digit_confidence"] == pytest.approx(
            b["prediction"]["digit_confidence"], abs=1e-4
        )


def test_ready_gauge_follows_the_service() -> None:
    """digitsum_ready is 1 while a service is up and 0 once it has stopped. (Its own app: the
    gauge is the process's, and other tests' apps stopping set it too.)"""
    with TestClient(create_app(make_settings())) as own:
        assert scrape_value(own.get("/metrics").text, "digitsum_ready") == 1
    assert metrics.REGISTRY.get_sample_value("digitsum_ready") == 0


def test_metrics_count_requests_predictions_and_errors(
    client: TestClient, mnist_test: Split
) -> None:
    label = str(int(mnist_test.labels[0]))
    watched = {
        "ok": ("digitsum_requests_total", {"method": "POST", "route": "/predict", "status": "200"}),
        "bad": (
            "digitsum_requests_total",
            {"method": "POST", "route": "/predict", "status": "400"},
        ),
        "ok_timed": (
            "digitsum_request_duration_seconds_count",
            {"method": "POST", "route": "/predict", "status": "200"},
        ),
        "predicted": ("digitsum_predictions_total", {"digit": label}),
        "invalid": ("digitsum_errors_total", {"code": "invalid_image"}),
        "passes": ("digitsum_inference_seconds_count", {}),
        "batch_sizes": ("digitsum_batch_size_count", {}),
        "queue_waits": ("digitsum_queue_wait_seconds_count", {}),
    }

    def scrape() -> dict[str, float]:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {key: scrape_value(response.text, *series) for key, series in watched.items()}

    before = scrape()
    good = client.post(
        "/predict",
        files={"image": ("x", mnist_png(mnist_test.images[0]), "image/png")},
        data={"number": "1"},
    )
    assert good.status_code == 200
    assert good.json()["digit"] == int(label)
    bad = client.post(
        "/predict", files={"image": ("x", b"nope", "image/png")}, data={"number": "1"}
    )
    assert bad.status_code == 400
    after = scrape()
    assert {key: after[key] - before[key] for key in watched} == {
        "ok": 1,
        "bad": 1,
        "ok_timed": 1,
        "predicted": 1,
        "invalid": 1,
        "passes": 1,  # the bad upload never reached the model
        "batch_sizes": 1,
        "queue_waits": 1,
    }


Part = tuple[str, tuple[str | None, bytes, str | None]]


def _form_from_schema(
    schema: dict[str, Any], png: bytes, skip: str | None = None, over: int = 0
) -> list[Part]:
    """A multipart request built from a documented form schema alone: a file where it says
    binary, the documented maximum (+ `over`) for an integer; the field `skip` left out. Every
    part is multipart (filename None for a text field), even when no file is left."""
    parts: list[Part] = []
    for name, prop in schema["properties"].items():
        if name == skip:
            continue
        item = prop.get("items", prop)
        if item.get("format") == "binary" or "contentMediaType" in item:
            parts.append((name, ("digit.png", png, "image/png")))
        else:
            assert item["type"] == "integer", (name, prop)
            parts.append((name, (None, str(item["maximum"] + over).encode(), None)))
    return parts


def _validate(spec: dict[str, Any], schema: dict[str, Any], instance: object) -> None:
    """Validate against a schema of the document, its $refs resolved in the document."""
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(instance)


def test_openapi_document_matches_what_the_service_does(
    client: TestClient, mnist_test: Split
) -> None:
    spec = client.get("/openapi.json").json()
    png = mnist_png(mnist_test.images[0])
    for path, operations in spec["paths"].items():
        for method in operations:
            # each documented operation exists: any answer but "no such route" or "not allowed"
            answer = client.request(method.upper(), path)
            assert answer.status_code not in (404, 405), (method, path, answer.text)
        for method in {"get", "post", "put", "delete"} - set(operations):
            assert client.request(method.upper(), path).status_code == 405, (method, path)
    for path in ("/predict", "/predict/batch"):
        operation = spec["paths"][path]["post"]
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        if "$ref" in form:
            form = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
        answer = client.post(path, files=_form_from_schema(form, png))
        assert answer.status_code == 200, answer.text
        _validate(
            spec,
            operation["responses"]["200"]["content"]["application/json"]["schema"],
            answer.json(),
        )
        for field in form["required"]:  # each required field is required
            answer = client.post(path, files=_form_from_schema(form, png, skip=field))
            assert answer.status_code == 422, (path, field, answer.text)
            assert answer.json()["error"]["field"] == field
            error_schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
            _validate(spec, error_schema, answer.json())
        # the documented maximum of the numbers is the real one
        answer = client.post(path, files=_form_from_schema(form, png, over=1))
        assert answer.status_code == 422, (path, answer.text)


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSUM_MAX_QUEUE", "zero")
    with pytest.raises(ValidationError, match="max_queue"):
        Settings()
    monkeypatch.setenv("DIGITSUM_MAX_QUEUE", "8")
    monkeypatch.setenv("DIGITSUM_DEVICE", "gpu")
    with pytest.raises(ValidationError, match="device"):
        Settings()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_elsewhere(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "http://" not in html
    assert "https://" not in html  # no CDN, no fonts, no favicon from elsewhere
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'; script-src 'self' ")
    assert "http" not in policy
    assert "'unsafe-eval'" not in policy
    assert "script-src 'self' 'unsafe-inline'" not in policy  # inline scripts only by hash
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html):
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 100_000  # the real bundle, not a stub


def test_unknown_docs_asset_is_404(client: TestClient) -> None:
    response = client.get("/docs/assets/..%2F..%2Fcore.py")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
