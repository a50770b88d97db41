"""Admission covers all work in flight: slow and large bodies at once fill it, and what comes
over its limits is answered 503 overloaded with Retry-After, before its body is read; the
probes keep answering, and once the bodies are gone the service predicts again.

Slow bodies are sent by raw sockets (tests/reliability/test_wire.py's helpers), which hold
their requests open for as long as the test needs.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability import live_server
from tests.reliability.conftest import Digit, assert_error, assert_predicts
from tests.reliability.test_wire import _body, _connect, _head, _read_response

MAX_UPLOAD_BYTES = 1024 * 1024
MAX_INFLIGHT_BYTES = 2 * MAX_UPLOAD_BYTES  # two of the largest bodies fill it
MAX_REQUESTS = 4
PROMPT_S = 2.0  # an answer from the headers alone comes at once; generous for a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live_server.LiveServer]:
    running = live_server.start(
        tmp_path_factory.mktemp("admission") / "server.log",
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_inflight_bytes=MAX_INFLIGHT_BYTES,
        max_requests=MAX_REQUESTS,
        max_batch_images=4,
        max_decode_queue=4,
        body_timeout_s=30,
    )
    yield running
    live_server.ensure_stopped(running)


@contextlib.contextmanager
def _slow_bodies(
    server: live_server.LiveServer, count: int, declared: int
) -> Iterator[list[socket.socket]]:
    """`count` requests that declare `declared` bytes of body and have sent 100 of them."""
    socks = [_connect(server) for _ in range(count)]
    try:
        for sock in socks:
            sock.sendall(_head(declared) + b"-" * 100)
        time.sleep(0.5)  # their headers are read and admitted
        yield socks
    finally:
        for sock in socks:
            sock.close()
        time.sleep(0.5)  # the server sees the hang-ups and releases what they held


def _assert_refused_promptly(client: httpx.Client, digit: Digit) -> None:
    started = time.perf_counter()
    response = client.post(
        "/predict", files={"image": ("d.png", digit.png, "image/png")}, data={"number": "3"}
    )
    assert time.perf_counter() - started < PROMPT_S
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"
    assert client.get("/health/live").status_code == 200  # the probes are never refused
    assert client.get("/health/ready").status_code == 200


def _gauge(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.slow
def test_large_slow_bodies_fill_the_bytes_in_flight(
    server: live_server.LiveServer, client: httpx.Client, digit: Digit
) -> None:
    with _slow_bodies(server, 2, MAX_UPLOAD_BYTES):
        assert _gauge(client, "digitsum_body_bytes_in_flight") == MAX_INFLIGHT_BYTES
        _assert_refused_promptly(client, digit)
        # A chunked body declares nothing: admitted, then refused as soon as it goes over.
        with _connect(server) as sock:
            head = (
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            sock.sendall(head + b"400\r\n" + b"-" * 1024 + b"\r\n")
            status, headers, body = _read_response(sock, timeout_s=PROMPT_S)
        assert status == 503, body
        assert headers["retry-after"] == "1"
    assert _gauge(client, "digitsum_body_bytes_in_flight") == 0
    assert_predicts(client, digit)


@pytest.mark.slow
def test_small_slow_bodies_fill_the_requests_in_flight(
    server: live_server.LiveServer, client: httpx.Client, digit: Digit
) -> None:
    with _slow_bodies(server, MAX_REQUESTS, len(_body(digit))):
        assert _gauge(client, "digitsum_requests_in_flight") == MAX_REQUESTS
        _assert_refused_promptly(client, digit)
    assert _gauge(client, "digitsum_requests_in_flight") == 0
    assert_predicts(client, digit)


@pytest.mark.slow
def test_slow_and_large_bodies_at_once(
    server: live_server.LiveServer, client: httpx.Client, digit: Digit
) -> None:
    """One large slow body and two small slow ones hold the service together; a fourth request
    still fits the request count but not the bytes, and is refused from its headers."""
    with (
        _slow_bodies(server, 1, MAX_UPLOAD_BYTES),
        _slow_bodies(server, 2, len(_body(digit))),
    ):
        with _connect(server) as sock:
            sock.sendall(_head(MAX_UPLOAD_BYTES))  # no body at all: answered from the headers
            status, headers, body = _read_response(sock, timeout_s=PROMPT_S)
        assert status == 503, body
        assert headers["connection"] == "close"
        ok = client.post(
            "/predict", files={"image": ("d.png", digit.png, "image/png")}, data={"number": "3"}
        )
        assert ok.status_code == 200, ok.text  # a small one still fits both
    assert_predicts(client, digit)
