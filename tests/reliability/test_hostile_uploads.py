"""A corpus of hostile and odd uploads, generated here, sent to the real server over real sockets.

    .venv/bin/python -m pytest tests/reliability/test_hostile_uploads.py

For each upload: the documented answer (a 4xx JSON error of the one shape, or 200 and the right
digit for odd but valid images), within a time bound, with the server's peak memory (VmHWM)
growing by at most PEAK_GROWTH_BOUND, and a normal request right after still answered correctly.
Single error cases through TestClient live in tests/app/test_errors.py; this is the wire-level,
whole-process view of the same promises, plus the shapes a browser never sends.
"""

from __future__ import annotations

import io
import json
import random
import struct
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from app.imaging import prepare_image
from tests.imagegen import encode, largest_drawing_png, mnist_pil
from tests.reliability import live_server
from tests.reliability.conftest import Digit, assert_error, assert_predicts
from training.data import Split

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # the default DIGITSUM_MAX_UPLOAD_BYTES
CASE_TIME_BOUND_S = 10.0  # each upload, answered; most take milliseconds
PEAK_GROWTH_BOUND = 300 * 2**20  # VmHWM growth allowed to one upload (the largest image: ~240 MB)


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


@pytest.fixture(scope="module")
def client(server: live_server.LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="module")
def figures(
    server: live_server.LiveServer, report: Callable[..., None]
) -> Iterator[list[tuple[str, int, float, int]]]:
    """(case, status, seconds, peak growth in bytes) of every upload, reported at the end."""
    rows: list[tuple[str, int, float, int]] = []
    rss_before = server.rss_bytes()
    yield rows
    if rows:
        report(
            "hostile uploads",
            cases=len(rows),
            statuses=dict(Counter(str(status) for _, status, _, _ in rows)),
            slowest_ms=round(max(seconds for _, _, seconds, _ in rows) * 1e3, 1),
            largest_peak_growth_mib=round(max(growth for *_, growth in rows) / 2**20, 1),
            rss_growth_mib=round((server.rss_bytes() - rss_before) / 2**20, 1),
        )


# --- the corpus: each entry builds the request from the digit and the MNIST test set ---------


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str, close: bool) -> bytes:
    """A multipart/form-data body by hand, so that it can be left unfinished."""
    out = io.BytesIO()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode())
        if filename:
            out.write(b"Content-Type: image/png\r\n")
        out.write(b"\r\n" + data + b"\r\n")
    if close:
        out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def _long_disposition(png: bytes) -> bytes:
    """An image part whose Content-Disposition header is 5 MB long (`; a=b` repeated)."""
    head = 'form-data; name="image"; filename="d.png"' + "; a=b" * 1_000_000
    return (
        f"--b\r\nContent-Disposition: {head}\r\n\r\n".encode()
        + png
        + b'\r\n--b\r\nContent-Disposition: form-data; name="number"\r\n\r\n3\r\n--b--\r\n'
    )


def _near_misses() -> bytes:
    """One image part whose 5 MB of data are CRLF "--b" "X" again and again: python-multipart
    steps through each near-miss of the delimiter in Python (2 s for the lot)."""
    return _multipart([("image", "d.png", b"\r\n--bX" * 800_000)], "b", True)


def _spaced_headers() -> bytes:
    """5 MB of parts whose headers start their values with 4,000 spaces, which python-multipart
    reads one byte at a time: seconds of parsing, within every limit."""
    part = (
        b"--b\r\n"
        + (b"X-Pad:" + b" " * 4000 + b"x\r\n") * 7
        + b'Content-Disposition: form-data; name="n"\r\n\r\n1\r\n'
    )
    return part * (5_000_000 // len(part)) + b"--b--\r\n"


def _sixteen_bit(image: Image.Image) -> Image.Image:
    pixels = bytes(b for v in image.tobytes() for b in (v * 257).to_bytes(2, "little"))
    return Image.frombytes("I;16", image.size, pixels)


def _exif_rotated_photo(image: Image.Image) -> bytes:
    """Stored sideways as a phone held in portrait does, with EXIF orientation 6 to undo it."""
    stored = image.resize((84, 84)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif)


Request = dict[str, Any]  # keyword arguments of httpx.Client.post


def _file(data: bytes, filename: str = "digit.png", ctype: str = "image/png") -> Request:
    return {"files": {"image": (filename, data, ctype)}, "data": {"number": "3"}}


@dataclass(frozen=True)
class Case:
    """One upload: how to build it, where it goes, and the documented answer."""

    build: Callable[[Digit, Split], Request]
    status: int
    code: str | None = None  # the error code; None for a 200
    path: str = "/predict"
    expect_digit: Callable[[Split], int] | None = None  # a 200 must read this digit


def _big(image: Image.Image) -> Image.Image:
    return image.resize((112, 112), Image.Resampling.BICUBIC)


CORPUS: dict[str, Case] = {
    "zero bytes": Case(lambda d, m: _file(b""), 400, "invalid_image"),
    "random bytes as image/png": Case(
        lambda d, m: _file(random.Random(0).randbytes(4096)), 400, "invalid_image"
    ),
    "random bytes behind a JPEG signature": Case(
        lambda d, m: _file(b"\xff\xd8\xff\xe0" + random.Random(1).randbytes(4096), "x.jpg"),
        400,
        "invalid_image",
    ),
    "text with a .png name": Case(
        lambda d, m: _file(b"#!/bin/sh\nrm -rf /\n", "digit.png"), 400, "invalid_image"
    ),
    "PNG with a lying .gif name and type": Case(
        lambda d, m: _file(d.png, "digit.gif", "image/gif"),
        200,
        expect_digit=lambda m: int(m.labels[0]),
    ),
    "TIFF with a lying .png name": Case(
        lambda d, m: _file(encode(Image.new("L", (28, 28)), "TIFF")), 415, "unsupported_format"
    ),
    "SVG with a lying .png name": Case(
        lambda d, m: _file(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), 415, "unsupported_format"
    ),
    "truncated PNG": Case(lambda d, m: _file(d.png[: len(d.png) // 2]), 400, "invalid_image"),
    "truncated JPEG": Case(
        lambda d, m: _file(encode(_big(mnist_pil(m.images[0])), "JPEG")[:300], "x.jpg"),
        400,
        "invalid_image",
    ),
    "PNG claiming 100000x100000": Case(
        lambda d, m: _file(_png_claiming(100_000, 100_000)), 400, "image_too_large"
    ),
    "PNG claiming 0x0": Case(lambda d, m: _file(_png_claiming(0, 0)), 400, "invalid_image"),
    "decompression bomb, 64 Mpx in ~60 kB": Case(
        lambda d, m: _file(encode(Image.new("L", (8000, 8000)), "PNG", optimize=True)),
        400,
        "image_too_large",
    ),
    "GIF bomb, 64 Mpx": Case(
        lambda d, m: _file(encode(Image.new("P", (8000, 8000)), "GIF"), "x.gif"),
        400,
        "image_too_large",
    ),
    "animated GIF": Case(
        lambda d, m: _file(
            encode(
                mnist_pil(m.images[3]),
                "GIF",
                save_all=True,
                append_images=[mnist_pil(m.images[4])],
                duration=100,
                loop=0,
            ),
            "a.gif",
            "image/gif",
        ),
        200,
        expect_digit=lambda m: int(m.labels[3]),
    ),
    "16-bit greyscale PNG": Case(
        lambda d, m: _file(encode(_sixteen_bit(_big(mnist_pil(m.images[1]))), "PNG")),
        200,
        expect_digit=lambda m: int(m.labels[1]),
    ),
    "palette PNG": Case(
        lambda d, m: _file(encode(_big(mnist_pil(m.images[1])).convert("P"), "PNG")),
        200,
        expect_digit=lambda m: int(m.labels[1]),
    ),
    "CMYK JPEG": Case(
        lambda d, m: _file(
            encode(_big(mnist_pil(m.images[1])).convert("CMYK"), "JPEG", quality=95), "c.jpg"
        ),
        200,
        expect_digit=lambda m: int(m.labels[1]),
    ),
    "EXIF-rotated photo": Case(
        lambda d, m: _file(_exif_rotated_photo(mnist_pil(m.images[2])), "p.jpg", "image/jpeg"),
        200,
        expect_digit=lambda m: int(m.labels[2]),
    ),
    "huge JSON instead of multipart (4 MB)": Case(
        lambda d, m: {
            "content": json.dumps({"image": "A" * 4_000_000, "number": 1}),
            "headers": {"content-type": "application/json"},
        },
        422,
        "validation_error",
    ),
    "JSON over the body limit (21 MB)": Case(
        lambda d, m: {
            "content": json.dumps({"image": "A" * 21_000_000}),
            "headers": {"content-type": "application/json"},
        },
        413,
        "payload_too_large",
    ),
    "5,000 form fields": Case(
        lambda d, m: {
            "files": {"image": ("d.png", d.png, "image/png")},
            "data": {"number": "3", **{f"f{i}": "x" for i in range(5000)}},
        },
        400,
        "bad_request",
    ),
    "2,000 files in one request": Case(
        lambda d, m: {
            "files": [("image", (f"{i}.png", d.png, "image/png")) for i in range(2000)],
            "data": {"number": "3"},
        },
        400,
        "bad_request",
    ),
    "20 images sent to /predict": Case(
        lambda d, m: {
            "files": [("image", (f"{i}.png", d.png, "image/png")) for i in range(20)],
            "data": {"number": "3"},
        },
        422,
        "validation_error",
    ),
    "two numbers sent to /predict": Case(
        lambda d, m: {
            "files": {"image": ("d.png", d.png, "image/png")},
            "data": {"number": ["3", "4"]},
        },
        422,
        "validation_error",
    ),
    "300 images sent to /predict/batch": Case(
        lambda d, m: {
            "files": [("images", (f"{i}.png", d.png, "image/png")) for i in range(300)],
            "data": {"numbers": ["3"] * 300},
        },
        422,
        "validation_error",
        path="/predict/batch",
    ),
    "multipart without its closing boundary": Case(  # truncated: malformed, not a missing field
        lambda d, m: {
            "content": _multipart([("number", None, b"3"), ("image", "d.png", d.png)], "b", False),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        400,
        "bad_request",
    ),
    "multipart with no boundary parameter": Case(
        lambda d, m: {
            "content": _multipart([("image", "d.png", d.png)], "b", True),
            "headers": {"content-type": "multipart/form-data"},
        },
        400,
        "bad_request",
    ),
    "multipart with a boundary that never occurs": Case(
        lambda d, m: {
            "content": random.Random(2).randbytes(100_000),
            "headers": {"content-type": "multipart/form-data; boundary=nothere"},
        },
        400,
        "bad_request",
    ),
    "URL-encoded form with a euro sign": Case(  # was a 500 (UnicodeEncodeError)
        lambda d, m: {
            "content": b"number=%E2%82%AC&image=x",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
        422,
        "validation_error",
    ),
    "a 5 MB Content-Disposition header": Case(  # was a 200 after 0.75 s of event loop
        lambda d, m: {
            "content": _long_disposition(d.png),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        400,
        "bad_request",
    ),
    "5 MB of near-misses of the boundary": Case(
        lambda d, m: {
            "content": _near_misses(),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        400,
        "bad_request",
    ),
    "Content-Disposition: attachment": Case(  # was a 400
        lambda d, m: {
            "content": _multipart(
                [("image", "d.png", d.png), ("number", None, b"3")], "b", True
            ).replace(b"form-data;", b"attachment;"),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        200,
        expect_digit=lambda m: int(m.labels[0]),
    ),
    "the boundary inside the image's data": Case(  # was a 400; PNG readers stop at IEND
        lambda d, m: {
            "content": _multipart(
                [("image", "d.png", d.png + b"\r\n--bX\r\n"), ("number", None, b"3")], "b", True
            ),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        200,
        expect_digit=lambda m: int(m.labels[0]),
    ),
    "declared body over the limit": Case(
        lambda d, m: {
            "content": b"\0" * (MAX_UPLOAD_BYTES + 1),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        413,
        "payload_too_large",
    ),
    "chunked body over the limit": Case(
        lambda d, m: {
            "content": iter(
                [b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n']
                + [b"\0" * 2**20] * (MAX_UPLOAD_BYTES // 2**20 + 1)
            ),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        413,
        "payload_too_large",
    ),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_upload_gets_the_documented_answer(
    name: str,
    server: live_server.LiveServer,
    client: httpx.Client,
    digit: Digit,
    mnist_test: Split,
    figures: list[tuple[str, int, float, int]],
) -> None:
    case = CORPUS[name]
    request = case.build(digit, mnist_test)
    peak_before = _vm_hwm(server.pid)
    started = time.perf_counter()
    response = client.post(case.path, **request)
    elapsed = time.perf_counter() - started
    assert elapsed < CASE_TIME_BOUND_S, f"{name}: answered in {elapsed:.1f} s"
    if case.code is None:
        assert response.status_code == case.status, response.text
        if case.expect_digit is not None:
            assert response.json()["digit"] == case.expect_digit(mnist_test), name
    else:
        assert_error(response, case.status, case.code)
    growth = _vm_hwm(server.pid) - peak_before
    figures.append((name, response.status_code, elapsed, growth))
    assert growth < PEAK_GROWTH_BOUND, f"{name}: peak memory grew by {growth / 2**20:.0f} MiB"
    assert server.alive()
    assert_predicts(client, digit)


LIVENESS_BOUND_S = 0.1  # GET /health/live, answered while a hostile body is being parsed
LIVENESS_ATTEMPTS = 3  # a stalled client can make one try look slow; a stalled parser, every try


@dataclass(frozen=True)
class Probe:
    """One GET /health/live: its wall time, and the server's CPU time meanwhile."""

    wall_s: float
    server_cpu_s: float


def _probe_while_posting(
    server: live_server.LiveServer, client: httpx.Client, body: bytes
) -> tuple[httpx.Response, list[Probe]]:
    """POST `body` from a thread, and GET /health/live again and again until it is answered:
    the answer, and the probes."""
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=60.0) as other:
            answers.append(
                other.post(
                    "/predict",
                    content=body,
                    headers={"content-type": "multipart/form-data; boundary=b"},
                )
            )

    poster = threading.Thread(target=post)
    poster.start()
    probes: list[Probe] = []
    while poster.is_alive():
        started, cpu = time.perf_counter(), server.cpu_seconds()
        assert client.get("/health/live").status_code == 200
        probes.append(Probe(time.perf_counter() - started, server.cpu_seconds() - cpu))
    poster.join()
    (answer,) = answers
    return answer, probes


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("a 5 MB Content-Disposition header", lambda d: _long_disposition(d.png)),
        ("5 MB of spaces in part headers", lambda d: _spaced_headers()),
    ],
)
def test_liveness_is_answered_while_a_hostile_body_is_parsed(
    server: live_server.LiveServer,
    client: httpx.Client,
    digit: Digit,
    report: Callable[..., None],
    name: str,
    body: Callable[[Digit], bytes],
) -> None:
    """The form is parsed on the event loop in slices: a body built to be slow to parse holds
    the worker's other clients back for one slice at a time, not for the whole body (the 5 MB
    header held them for 0.75 s).

    A probe's time is counted in the server's CPU time, which a parse holding the event loop
    spends and other processes on a shared machine do not (in wall time, probes took up to 2.7 s
    with ten processes runnable on two cores). The client itself can still be stalled while the
    server parses, so the slowest probe of the best of LIVENESS_ATTEMPTS tries is judged."""
    slowest: list[float] = []
    for _ in range(LIVENESS_ATTEMPTS):
        answer, probes = _probe_while_posting(server, client, body(digit))
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert probes, "no liveness probe while the body was sent and parsed"
        slowest.append(max(p.server_cpu_s for p in probes))
        if slowest[-1] < LIVENESS_BOUND_S:
            break
    report(
        "liveness while a hostile body is parsed",
        case=name,
        status=answer.status_code,
        probes=len(probes),
        slowest_probe_server_cpu_ms=[round(s * 1e3, 1) for s in slowest],
        slowest_probe_wall_ms=round(max(p.wall_s for p in probes) * 1e3, 1),
    )
    assert min(slowest) < LIVENESS_BOUND_S, f"{name}: {min(slowest) * 1e3:.0f} ms of server CPU"


def test_largest_allowed_image_is_answered_within_bounds(
    server: live_server.LiveServer,
    client: httpx.Client,
    digit: Digit,
    figures: list[tuple[str, int, float, int]],
) -> None:
    """5000x5000 RGBA (25 Mpx, just under DIGITSUM_MAX_IMAGE_PIXELS) in a ~100 kB PNG: decoded,
    then shrunk before the float work, so its peak stays a few hundred MB, not ~750 MB."""
    data = largest_drawing_png()
    assert len(data) < 200_000
    peak_before = _vm_hwm(server.pid)
    started = time.perf_counter()
    response = client.post("/predict", **_file(data))
    elapsed = time.perf_counter() - started
    assert elapsed < CASE_TIME_BOUND_S
    assert response.status_code == 200, response.text
    growth = _vm_hwm(server.pid) - peak_before
    figures.append(("25 Mpx RGBA PNG", response.status_code, elapsed, growth))
    assert growth < PEAK_GROWTH_BOUND, f"peak memory grew by {growth / 2**20:.0f} MiB"
    assert_predicts(client, digit)


def test_preprocessing_a_25_mpx_image_allocates_little() -> None:
    """In-process, the numpy side of preprocessing (traced by tracemalloc) stays at a few MB for
    the largest image allowed; before images were shrunk first it was about 500 MB."""
    data = largest_drawing_png()
    tracemalloc.start()
    try:
        prepare_image(data, 25_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB traced"
