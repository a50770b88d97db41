"""Security basics: CORS closed unless configured, no log injection, no path or shell reached by
request data, and formats outside the allow-list never reach a decoder.

    .venv/bin/python -m pytest tests/reliability/test_security.py

The wire-level checks run against `python -m app`; the decoder checks run in-process with a spy
on Pillow. No stack trace or internal path in any error answer is asserted by every suite here
(tests/reliability/conftest.py::assert_error), and for a real 500 by
tests/app/test_errors.py::test_unexpected_failure_is_500_with_request_id_and_nothing_internal.
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from app import imaging
from app.errors import InvalidImage, UnsupportedFormat
from tests.conftest import REPO_ROOT
from tests.imagegen import encode
from tests.reliability import live_server
from tests.reliability.conftest import Digit, assert_error, assert_predicts

ALLOWED_ORIGIN = "https://digits.example"
OTHER_ORIGIN = "https://evil.example"


def _preflight(client: httpx.Client, origin: str) -> httpx.Response:
    return client.options(
        "/predict",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def test_cors_is_closed_by_default(client: httpx.Client, digit: Digit) -> None:
    preflight = _preflight(client, OTHER_ORIGIN)
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405  # no CORS layer at all: OPTIONS is not a route
    response = client.post(
        "/predict",
        files={"image": ("d.png", digit.png, "image/png")},
        data={"number": "1"},
        headers={"Origin": OTHER_ORIGIN},
    )
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)


def test_cors_allows_exactly_the_configured_origins(tmp_path: Path, digit: Digit) -> None:
    server = live_server.start(tmp_path / "cors.log", cors_origins=json.dumps([ALLOWED_ORIGIN]))
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            allowed = _preflight(client, ALLOWED_ORIGIN)
            assert allowed.status_code == 200
            assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
            assert "POST" in allowed.headers["access-control-allow-methods"]
            assert "access-control-allow-credentials" not in allowed.headers

            refused = _preflight(client, OTHER_ORIGIN)
            assert refused.status_code == 400
            assert "access-control-allow-origin" not in refused.headers

            for origin, expected in ((ALLOWED_ORIGIN, ALLOWED_ORIGIN), (OTHER_ORIGIN, None)):
                response = client.post(
                    "/predict",
                    files={"image": ("d.png", digit.png, "image/png")},
                    data={"number": "1"},
                    headers={"Origin": origin},
                )
                assert response.status_code == 200
                assert response.headers.get("access-control-allow-origin") == expected
                if expected:
                    exposed = response.headers["access-control-expose-headers"].lower()
                    assert "x-request-id" in exposed
    finally:
        live_server.ensure_stopped(server)


HOSTILE_TEXT = '\n{"level": "error", "message": "forged"}\r\n\x1b[31mred\x1b[0m\x00'


def _records_since(server: live_server.LiveServer, offset: int) -> list[dict[str, Any]]:
    lines = server.log_text()[offset:].splitlines()
    return [json.loads(line) for line in lines]  # a non-JSON line fails here


def _wait_for_log(
    server: live_server.LiveServer, offset: int, logged: Callable[[str], bool], what: str
) -> None:
    """Wait until the log written since `offset` shows what `logged` looks for: the writer
    thread writes the access lines a moment (up to app.logs.LOG_FLUSH_S) after the answers."""
    deadline = time.monotonic() + 5
    while not logged(server.log_text()[offset:]):
        assert time.monotonic() < deadline, f"never logged: {what}"
        time.sleep(0.05)


def test_hostile_request_id_and_path_cannot_forge_log_lines(
    server: live_server.LiveServer, client: httpx.Client
) -> None:
    offset = len(server.log_text())
    # A header value cannot carry CR or LF (HTTP has no way to); uvicorn refuses other control
    # characters (an ESC) with its own 400 before any app code runs. Quotes and braces pass,
    # and the id is replaced rather than echoed or logged.
    escape = client.get("/health/live", headers={"X-Request-ID": "\x1b[31mred"})
    assert escape.status_code == 400
    header_value = '", "level": "error", "message": "forged'
    response = client.get("/health/live", headers={"X-Request-ID": header_value})
    assert response.status_code == 200
    replaced = response.headers["x-request-id"]
    assert len(replaced) == 32
    assert all(c in "0123456789abcdef" for c in replaced)
    # A path can carry anything percent-encoded; the server decodes it before logging.
    encoded = "".join(f"%{b:02X}" for b in HOSTILE_TEXT.encode())
    response = client.get(f"/nothing/{encoded}")
    assert_error(response, 404, "not_found")
    live = client.get("/health/live", headers={"X-Request-ID": "after-the-hostile-ones"})
    assert live.status_code == 200

    last = '"request_id": "after-the-hostile-ones"'
    _wait_for_log(server, offset, lambda log: last in log, "the last request")
    records = _records_since(server, offset)
    access = [r for r in records if r["logger"] == "digitsum.access"]
    assert [r["request_id"] for r in access][-1] == "after-the-hostile-ones"
    assert all(r["message"] != "forged" for r in records)
    assert any(r["path"] == f"/nothing/{HOSTILE_TEXT}" for r in access)  # kept, escaped
    raw = server.log_text()[offset:]
    assert "\x1b" not in raw  # escapes arrive in the log as \u001b text, never as bytes
    assert "\x00" not in raw


def test_hostile_file_name_is_never_echoed_logged_or_used_as_a_path(
    server: live_server.LiveServer, client: httpx.Client, digit: Digit
) -> None:
    """The service reads an upload's bytes and nothing else of its part: the file name reaches
    no answer (success or error), no log line and no file path. Each name carries a marker that
    would show if a future change echoed or logged it."""
    marker = f"fn{uuid.uuid4().hex}"
    target = Path("/tmp") / f"digitsum-pwned-{marker}"
    names = [
        f"../../../..{target}",
        f"x;touch {target}",
        f"$(touch {target})",
        f'{marker}"; name="number',
        f"{marker}\u001b[31m<script>.png",
    ]
    offset = len(server.log_text())
    for name in names:
        for image, number, status in (
            (digit.png, "2", 200),
            (b"nope", "2", 400),
            (digit.png, "x", 422),
        ):
            response = client.post(
                "/predict",
                files={"image": (name, image, "image/png")},
                data={"number": number},
                headers={"X-Request-ID": "hostile-file-name"},
            )
            assert response.status_code == status, response.text
            assert marker not in response.text
            assert str(target) not in response.text
            if status == 200:
                assert response.json()["digit"] == digit.label
    ours = '"request_id": "hostile-file-name"'
    _wait_for_log(server, offset, lambda log: log.count(ours) >= 3 * len(names), "every request")
    records = _records_since(server, offset)
    assert sum(r.get("request_id") == "hostile-file-name" for r in records) >= 3 * len(names)
    logged = server.log_text()[offset:]
    assert marker not in logged
    assert not target.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2F..%2Fapi%2Fdeps.py",
        "/static/%2e%2e%2fconfig.py",
        "/static/.hidden",
        "/static/index.html%00.png",
        "/static//etc/passwd",
    ],
)
def test_static_files_do_not_escape_their_folder(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


def test_after_the_security_checks_the_service_still_answers(
    server: live_server.LiveServer, client: httpx.Client, digit: Digit
) -> None:
    assert server.alive()
    assert_predicts(client, digit)


# --- in-process: what reaches Pillow -----------------------------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[list[str] | None]:
    """Every call of PIL.Image.open made by app.imaging, with the formats it allowed."""
    calls: list[list[str] | None] = []
    real_open = Image.open

    def spy(fp: Any, mode: str = "r", formats: Any = None) -> Image.Image:
        calls.append(list(formats) if formats is not None else None)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(imaging.Image, "open", spy)
    return calls


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (encode(Image.new("L", (28, 28)), "TIFF"), UnsupportedFormat),
        (encode(Image.new("RGB", (28, 28)), "ICO"), UnsupportedFormat),
        (encode(Image.new("L", (28, 28)), "PPM"), UnsupportedFormat),
        (encode(Image.new("RGB", (28, 28)), "PDF"), UnsupportedFormat),
        (b'<?xml version="1.0"?><svg/>', UnsupportedFormat),
        (b"8BPS\x00\x01" + bytes(64), UnsupportedFormat),  # Photoshop
        (encode(Image.new("RGB", (28, 28)), "TGA"), InvalidImage),  # no signature at all
        (encode(Image.new("L", (28, 28)), "PCX"), InvalidImage),
        (encode(Image.new("L", (28, 28)), "DDS"), InvalidImage),
    ],
    ids=["tiff", "ico", "ppm", "pdf", "svg", "psd", "tga", "pcx", "dds"],
)
def test_formats_outside_the_allow_list_never_reach_a_decoder(
    opened: list[list[str] | None], data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        imaging.prepare_image(data, 25_000_000)
    assert opened == []


def test_an_allowed_signature_opens_only_its_own_decoder(
    opened: list[list[str] | None],
) -> None:
    """A TIFF behind a PNG signature is tried as PNG only, never handed to the TIFF decoder."""
    tiff = encode(Image.new("L", (28, 28)), "TIFF")
    with pytest.raises(InvalidImage):
        imaging.prepare_image(b"\x89PNG\r\n\x1a\n" + tiff, 25_000_000)
    assert opened == [["PNG"]]


def test_the_service_code_has_no_way_to_a_shell_or_to_eval() -> None:
    """No module of app/ imports subprocess, os.system/popen, pickle, shelve or marshal, or calls
    eval/exec: request data has nowhere to go but Pillow, numpy and the model."""
    forbidden_modules = {"subprocess", "pickle", "shelve", "marshal", "pty"}
    forbidden_builtins = {"eval", "exec", "compile", "__import__"}
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            assert not names & forbidden_modules, f"{path}: imports {names & forbidden_modules}"
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            where = f"{path}:{node.lineno}"
            if isinstance(func, ast.Name):
                assert func.id not in forbidden_builtins, f"{where}: calls {func.id}"
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "os"
            ):
                assert not func.attr.startswith(("system", "popen", "exec", "spawn")), where
