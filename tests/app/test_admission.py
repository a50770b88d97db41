"""Images waiting for the decoding pool count against DIGITSUM_MAX_DECODE_QUEUE (in-process: the
pool is held busy by a patched step, which only a test can do). The wire's limits (requests and
bytes in flight) are tested on a live server in tests/reliability/test_admission.py."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import imaging
from app.api.routes import predict
from app.errors import ServiceError
from app.main import create_app
from tests.conftest import make_settings
from tests.imagegen import encode, paper_photo
from training.data import Split


def test_photos_over_the_decoding_queue_are_503_and_the_rest_answered(
    mnist_test: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = encode(paper_photo(mnist_test.images[0], random.Random(0)), "JPEG")
    release, entered = threading.Event(), threading.Event()
    real = imaging.prepare_batch

    def held(blobs: list[bytes], max_pixels: int) -> list[np.ndarray | ServiceError]:
        entered.set()
        release.wait(30)
        return real(blobs, max_pixels)

    monkeypatch.setattr(predict, "prepare_batch", held)
    settings = make_settings(max_decode_queue=2, max_batch_images=2)
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            client.post,
            "/predict/batch",
            files=[("images", (f"{i}.jpg", photo, "image/jpeg")) for i in range(2)],
            data={"numbers": ["1", "2"]},
        )
        assert entered.wait(30)
        refused = client.post(
            "/predict", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"number": "1"}
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        release.set()
        answered = first.result(30)
        assert answered.status_code == 200, answered.text
        digits = [r["prediction"]["digit"] for r in answered.json()["results"]]
        assert digits == [int(mnist_test.labels[0])] * 2
        again = client.post(
            "/predict", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"number": "1"}
        )
        assert again.status_code == 200, again.text


def test_a_body_outside_admission_is_not_counted_against_it() -> None:
    """Only requests admitted (POST, PUT, PATCH) count their body's bytes: a DELETE whose body
    an app reads must not leave bytes counted that nothing releases."""
    import asyncio

    from starlette.types import Message, Receive, Scope, Send

    from app.admission import Admission
    from app.middleware import RequestContextMiddleware

    async def reads_body(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    admission = Admission(max_requests=4, max_bytes=10_000, max_decoding=4)
    middleware = RequestContextMiddleware(
        reads_body, max_body_bytes=10_000, body_timeout_s=5, admission=admission
    )
    chunks: list[Message] = []

    async def receive() -> Message:
        return chunks.pop(0)

    async def send(message: Message) -> None:
        pass

    for method in ("DELETE", "POST"):
        chunks[:] = [
            {"type": "http.request", "body": b"x" * 100, "more_body": True},
            {"type": "http.request", "body": b"x" * 100, "more_body": False},
        ]
        scope = {"type": "http", "method": method, "path": "/x", "headers": []}
        asyncio.run(middleware(scope, receive, send))
        assert (admission.bytes, admission.requests) == (0, 0), method
