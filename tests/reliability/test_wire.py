"""What only a raw socket can send: slow bodies, lying Content-Length, broken HTTP, hang-ups.

    .venv/bin/python -m pytest tests/reliability/test_wire.py

The server runs with DIGITSUM_BODY_TIMEOUT_S=2 so that a stalled body is cut off quickly. After
each case a normal request over a fresh connection must still be answered correctly.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability import live_server
from tests.reliability.conftest import Digit, assert_predicts

BODY_TIMEOUT_S = 2.0
KEEPALIVE_S = 3
BOUNDARY = "wireboundary"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live_server.LiveServer]:
    log = tmp_path_factory.mktemp("wire") / "server.log"
    running = live_server.start(log, body_timeout_s=BODY_TIMEOUT_S, keepalive_s=KEEPALIVE_S)
    yield running
    live_server.ensure_stopped(running)


@pytest.fixture(autouse=True)
def _still_serving_after(
    server: live_server.LiveServer, client: httpx.Client, digit: Digit
) -> Iterator[None]:
    yield
    assert server.alive()
    assert_predicts(client, digit)


def _body(digit: Digit) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="number"\r\n\r\n3\r\n'
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + digit.png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _head(content_length: int | None, extra: str = "") -> bytes:
    length = f"Content-Length: {content_length}\r\n" if content_length is not None else ""
    return (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{length}{extra}\r\n"
    ).encode()


def _connect(server: live_server.LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body (what uvicorn sends for JSON)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def _assert_timeout_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 408, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_body_that_stops_is_cut_off_after_the_body_timeout(
    server: live_server.LiveServer, digit: Digit
) -> None:
    body = _body(digit)
    with _connect(server) as sock:
        sock.sendall(_head(len(body)) + body[:1])
        started = time.perf_counter()
        answer = _read_response(sock, timeout_s=BODY_TIMEOUT_S + 10)
        elapsed = time.perf_counter() - started
    _assert_timeout_answer(*answer)
    assert BODY_TIMEOUT_S - 0.2 < elapsed < BODY_TIMEOUT_S + 2


def test_body_sent_a_byte_at_a_time_is_cut_off(
    server: live_server.LiveServer, digit: Digit
) -> None:
    """Each byte arrives well inside the per-chunk timeout, so only the minimum rate (1 kB/s
    once the body has taken longer than the timeout) stops it: no connection is held forever."""
    body = _body(digit)
    started = time.perf_counter()
    with _connect(server) as sock:
        sock.sendall(_head(len(body)))
        for byte in body:  # ~400 bytes at 0.1 s: 40 s if nothing stopped it
            assert time.perf_counter() - started < 20, "the server still reads it after 20 s"
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server has answered and closed
                break
            sock.settimeout(0.1)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # an answer is waiting
            except TimeoutError:
                continue
        answer = _read_response(sock, timeout_s=5)
    elapsed = time.perf_counter() - started
    _assert_timeout_answer(*answer)
    assert elapsed < BODY_TIMEOUT_S + 3


def test_content_length_larger_than_the_body_times_out(
    server: live_server.LiveServer, digit: Digit
) -> None:
    body = _body(digit)
    with _connect(server) as sock:
        sock.sendall(_head(len(body) + 1000) + body)
        _assert_timeout_answer(*_read_response(sock, timeout_s=BODY_TIMEOUT_S + 10))


def test_content_length_smaller_than_the_body_is_a_client_error(
    server: live_server.LiveServer, digit: Digit
) -> None:
    """The rest of the body is read as the next request, which is not HTTP: uvicorn answers 400
    (its own plain-text answer, before any app code runs) and closes the connection."""
    body = _body(digit)
    with _connect(server) as sock:
        sock.sendall(_head(10) + body)
        status, _, _ = _read_response(sock, timeout_s=10)
    assert 400 <= status < 500


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 200_000 + b"\r\n\r\n",
    ],
    ids=["tls", "bad version", "negative length", "bad chunk", "100 kB path", "200 kB header"],
)
def test_broken_http_gets_a_client_error_or_a_closed_connection(
    server: live_server.LiveServer, garbage: bytes
) -> None:
    with _connect(server) as sock:
        try:
            sock.sendall(garbage)
            status, _, _ = _read_response(sock, timeout_s=10)
        except (ConnectionError, OSError):
            return  # closed without an answer: acceptable for bytes that are not HTTP
    assert status < 500


def test_client_hanging_up_mid_body_leaves_no_error_behind(
    server: live_server.LiveServer, digit: Digit
) -> None:
    body = _body(digit)
    log_size = len(server.log_text())
    for _ in range(20):
        with _connect(server) as sock:
            sock.sendall(_head(len(body)) + body[: len(body) // 2])
    time.sleep(0.5)
    new_lines = server.log_text()[log_size:]
    assert '"level": "error"' not in new_lines
    assert "Traceback" not in new_lines


@pytest.mark.xfail(
    strict=True,
    reason="uvicorn has no timeout for reading request headers (its keep-alive timer is off "
    "until the first response); nginx's client_header_timeout covers it in deploy/",
)
def test_headers_sent_slowly_are_cut_off(server: live_server.LiveServer) -> None:
    head = _head(None)
    with _connect(server) as sock:
        sock.settimeout(0.5)
        deadline = time.monotonic() + 2 * KEEPALIVE_S
        for byte in head[:-2]:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    return  # closed by the server: what we want
            except TimeoutError:
                continue
            except OSError:
                return
    pytest.fail(f"a connection trickling its headers was held for over {2 * KEEPALIVE_S} s")
