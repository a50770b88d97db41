"""Every error case: its status and JSON body, and the service answering normally right after."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from app.main import create_app
from app.state import Phase, ServiceState
from tests.conftest import make_settings
from tests.imagegen import encode, mnist_png
from training.data import Split


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _assert_error(response: object, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    if field is not None:
        assert error["field"] == field


@pytest.fixture
def good_png(mnist_test: Split) -> bytes:
    return mnist_png(mnist_test.images[0])


@pytest.fixture(autouse=True)
def _still_serving_after(client: TestClient, good_png: bytes, mnist_test: Split) -> Iterator[None]:
    """After every error case, a normal request still gets the right answer."""
    yield
    response = client.post(
        "/predict", files={"image": ("ok.png", good_png, "image/png")}, data={"number": "3"}
    )
    assert response.status_code == 200
    assert response.json()["sum"] == int(mnist_test.labels[0]) + 3


def _post(client: TestClient, data: bytes, number: str = "1", ctype: str = "image/png") -> object:
    return client.post("/predict", files={"image": ("x", data, ctype)}, data={"number": number})


@pytest.mark.parametrize(
    ("data", "what"),
    [(b"", "empty"), (b"hello, world", "text"), (bytes(range(256)) * 8, "random bytes")],
)
def test_not_an_image_is_400(client: TestClient, data: bytes, what: str) -> None:
    _assert_error(_post(client, data), 400, "invalid_image", "image")


def test_truncated_png_is_400(client: TestClient, good_png: bytes) -> None:
    _assert_error(_post(client, good_png[: len(good_png) // 2]), 400, "invalid_image", "image")


def test_truncated_jpeg_is_400(client: TestClient) -> None:
    jpeg = encode(Image.new("RGB", (64, 64), "white"), "JPEG")
    _assert_error(_post(client, jpeg[:200], ctype="image/jpeg"), 400, "invalid_image", "image")


def test_format_outside_the_allow_list_is_415(client: TestClient) -> None:
    tiff = encode(Image.new("L", (28, 28)), "TIFF")
    _assert_error(_post(client, tiff, ctype="image/tiff"), 415, "unsupported_format", "image")


def test_lying_extension_and_content_type_do_not_matter(
    client: TestClient, good_png: bytes
) -> None:
    response = client.post(
        "/predict", files={"image": ("digit.gif", good_png, "image/gif")}, data={"number": "0"}
    )
    assert response.status_code == 200


def test_absurd_dimensions_are_refused_before_decoding(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []

    def pillow_load(image: ImageFile.ImageFile) -> None:
        decoded.append("pillow")

    monkeypatch.setattr(ImageFile.ImageFile, "load", pillow_load)
    response = _post(client, _png_claiming(100_000, 100_000))
    _assert_error(response, 400, "image_too_large", "image")
    assert decoded == []  # refused from the header alone


def test_decompression_bomb_is_refused(client: TestClient) -> None:
    bomb = encode(Image.new("L", (8000, 8000)), "PNG", optimize=True)  # 64 Mpx, tens of kB
    assert len(bomb) < 200_000
    _assert_error(_post(client, bomb), 400, "image_too_large", "image")


def test_declared_body_over_the_limit_is_413(client: TestClient) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 1024 * 1024)  # the default limit is 20 MiB
    _assert_error(_post(client, big), 413, "payload_too_large")


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
        for _ in range(21):
            yield b"\0" * (1024 * 1024)

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    _assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("number", "why"),
    [("12", "range"), ("-1", "range"), ("two", "int"), ("3.5", "int"), ("", "missing")],
)
def test_bad_number_is_422_naming_the_field(
    client: TestClient, good_png: bytes, number: str, why: str
) -> None:
    _assert_error(_post(client, good_png, number), 422, "validation_error", "number")


def test_missing_number_is_422(client: TestClient, good_png: bytes) -> None:
    response = client.post("/predict", files={"image": ("x.png", good_png, "image/png")})
    _assert_error(response, 422, "validation_error", "number")


def test_missing_image_is_422(client: TestClient, good_png: bytes) -> None:
    response = client.post(
        "/predict",
        data={"number": "1"},
        files={"unrelated": ("x.png", good_png, "image/png")},  # makes httpx send multipart
    )
    _assert_error(response, 422, "validation_error", "image")


def test_json_instead_of_multipart_is_422(client: TestClient) -> None:
    response = client.post("/predict", json={"number": 1, "image": "x" * 10_000})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_batch_with_mismatched_counts_is_422(client: TestClient, good_png: bytes) -> None:
    response = client.post(
        "/predict/batch",
        files=[("images", ("a", good_png, "image/png"))] * 2,
        data={"numbers": ["1"]},
    )
    _assert_error(response, 422, "validation_error", "numbers")


def test_batch_over_the_documented_maximum_is_422(good_png: bytes) -> None:
    with TestClient(create_app(make_settings(max_batch_images=3))) as small:
        response = small.post(
            "/predict/batch",
            files=[("images", ("a", good_png, "image/png"))] * 4,
            data={"numbers": ["1"] * 4},
        )
    _assert_error(response, 422, "validation_error", "images")


def test_unknown_route_is_404_json(client: TestClient) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")


def test_not_ready_is_503_with_retry_after(good_png: bytes) -> None:
    app = create_app(make_settings())
    loading = TestClient(app)  # no `with`: the lifespan has not run, the model is not loaded
    response = loading.post(
        "/predict", files={"image": ("x", good_png, "image/png")}, data={"number": "1"}
    )
    _assert_error(response, 503, "not_ready")
    assert int(response.headers["retry-after"]) > 0
    ready = loading.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "loading"}


def test_draining_is_503_with_retry_after(client: TestClient, good_png: bytes) -> None:
    service: ServiceState = client.app.state.service  # type: ignore[attr-defined]
    service.set_phase(Phase.DRAINING)
    try:
        _assert_error(_post(client, good_png), 503, "draining")
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["retry-after"]
        assert client.get("/health/live").status_code == 200
    finally:
        service.set_phase(Phase.READY)


def test_unexpected_failure_is_500_with_request_id_and_nothing_internal(
    client: TestClient, good_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    service: ServiceState = client.app.state.service  # type: ignore[attr-defined]
    assert service.runtime is not None

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret internal detail at /srv/app/inference.py")

    monkeypatch.setattr(service.runtime.batcher, "predict", broken)
    response = client.post(
        "/predict",
        files={"image": ("x", good_png, "image/png")},
        data={"number": "1"},
        headers={"X-Request-ID": "trace-me-42"},
    )
    _assert_error(response, 500, "internal_error")
    assert response.json()["error"]["request_id"] == "trace-me-42"
    assert "secret" not in response.text
    assert "/srv" not in response.text
    assert "Traceback" not in response.text


def test_request_id_is_echoed_or_replaced_when_unsafe(client: TestClient) -> None:
    assert (
        client.get("/health/live", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    replaced = client.get("/health/live", headers={"X-Request-ID": 'bad id\twith"quotes'})
    assert replaced.headers["x-request-id"] != 'bad id\twith"quotes'
    assert len(replaced.headers["x-request-id"]) == 32
    again = client.get("/health/live", headers={"X-Request-ID": "bad id"})
    assert again.headers["x-request-id"] != replaced.headers["x-request-id"]


def test_bad_include_input_is_422_naming_it(client: TestClient, good_png: bytes) -> None:
    response = client.post(
        "/predict?include_input=maybe",
        files={"image": ("x.png", good_png, "image/png")},
        data={"number": "1"},
    )
    _assert_error(response, 422, "validation_error", "include_input")


def test_other_methods_on_the_prediction_routes_are_405_json(client: TestClient) -> None:
    """The fast path takes POST only; anything else gets FastAPI's answer, in our shape."""
    for path in ("/predict", "/predict/batch"):
        _assert_error(client.get(path), 405, "method_not_allowed")


def test_image_sent_as_a_text_field_is_422(client: TestClient, good_png: bytes) -> None:
    """A part without a filename is a text field, as FastAPI's File() parameters read it."""
    for path, name in (("/predict", "image"), ("/predict/batch", "images")):
        response = client.post(
            path,
            data={name: "null", "number": "1", "numbers": "1"},
            files={"unrelated": ("x.png", good_png, "image/png")},  # makes httpx send multipart
        )
        _assert_error(response, 422, "validation_error", name)
