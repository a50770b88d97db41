"""PredictFastPath answers POST /predict and /predict/batch as FastAPI's router would.

The fast path calls the routes' own endpoints; these tests hold it to the router: the same
answers to the same requests from an app without it, the same OpenAPI document, and the same
route under a root path (`uvicorn --root-path`), where the router strips the prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.main import DigitsumAPI, create_app
from app.middleware import PredictFastPath
from tests.conftest import make_settings
from tests.imagegen import mnist_png
from training.data import Split


def _without_fast_path() -> DigitsumAPI:
    app = create_app(make_settings())
    assert isinstance(app, DigitsumAPI)
    app.outer_middleware = [m for m in app.outer_middleware if m.cls is not PredictFastPath]
    return app


@pytest.fixture(scope="module")
def router_client() -> Iterator[TestClient]:
    """The service with every request through FastAPI's router."""
    with TestClient(_without_fast_path(), raise_server_exceptions=False) as test_client:
        yield test_client


def _requests(png: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    image = {"image": ("d.png", png, "image/png")}
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    return [
        ("POST", "/predict?include_input=yes", {"files": image, "data": {"number": "3"}}),
        ("POST", "/predict?include_input=maybe", {"files": image, "data": {"number": "3"}}),
        ("POST", "/predict", {"files": image, "data": {"number": "12"}}),
        ("POST", "/predict", {"files": image}),
        ("POST", "/predict", {"files": {"image": ("d.png", b"not an image", "image/png")}}),
        ("POST", "/predict", {"json": {"image": "x", "number": 3}}),
        (
            "POST",
            "/predict",
            {
                "content": b"number=%E2%82%AC&image=x",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
        ),
        ("POST", "/predict", {"content": b"--b\r\n\r\nx", "headers": multipart}),
        (
            "POST",
            "/predict/batch",
            {
                "files": [("images", ("a.png", png, "image/png")), ("images", ("b.png", b"x"))],
                "data": {"numbers": ["1", "2"]},
            },
        ),
        (
            "POST",
            "/predict/batch",
            {"files": [("images", ("a.png", png, "image/png"))], "data": {"numbers": ["1", "2"]}},
        ),
        ("GET", "/predict", {}),
        ("PUT", "/predict/batch", {}),
    ]


def _answer(client: TestClient, method: str, path: str, kwargs: dict[str, Any]) -> object:
    response = client.request(method, path, **kwargs)
    body = response.json()
    if "error" in body:
        body["error"].pop("request_id")
    for item in body.get("results", []):
        if "error" in item:
            item["error"].pop("request_id")
    headers = {k: response.headers.get(k) for k in ("content-type", "retry-after", "allow")}
    return response.status_code, headers, body


def test_answers_are_the_router_s(
    client: TestClient, router_client: TestClient, mnist_test: Split
) -> None:
    png = mnist_png(mnist_test.images[0])
    for method, path, kwargs in _requests(png):
        fast = _answer(client, method, path, kwargs)
        assert fast == _answer(router_client, method, path, kwargs), (method, path)


def test_openapi_is_the_router_s(client: TestClient, router_client: TestClient) -> None:
    assert client.get("/openapi.json").json() == router_client.get("/openapi.json").json()


def test_root_path_takes_the_fast_path(mnist_test: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind `uvicorn --root-path /api` the path arrives as /api/predict with root_path /api:
    the fast path strips the prefix as the router does, and the router never sees the request."""
    routed: list[str] = []
    handle = APIRoute.handle

    async def spy(self: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        routed.append(self.path)
        await handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", spy)
    files = {"image": ("d.png", mnist_png(mnist_test.images[0]), "image/png")}
    with TestClient(create_app(make_settings()), root_path="/api") as behind_proxy:
        response = behind_proxy.post("/api/predict", files=files, data={"number": "3"})
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == int(mnist_test.labels[0])
        assert routed == []
        assert behind_proxy.get("/api/health/live").status_code == 200
    assert routed == ["/health/live"]  # the spy sees what the router handles
