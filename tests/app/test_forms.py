"""app.forms: python-multipart reads every form; what it refuses, and what the service answers."""

from __future__ import annotations

import random

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from python_multipart.multipart import parse_options_header

from app.forms import MAX_PARTS, FormFieldError, MalformedForm, parse_form, parse_number
from tests.imagegen import mnist_png
from training.data import Split


@pytest.fixture(scope="module")
def good_png(mnist_test: Split) -> bytes:
    return mnist_png(mnist_test.images[0])


def _httpx_body(files: list[tuple[str, bytes]], data: dict[str, list[str]]) -> tuple[bytes, bytes]:
    request = httpx.Request(
        "POST",
        "http://x/predict",
        files=[(name, ("f.png", blob, "image/png")) for name, blob in files],
        data=data,
    )
    boundary = parse_options_header(request.headers["content-type"])[1][b"boundary"]
    return request.read(), boundary


def _part(name: str, data: bytes, disposition: str = "form-data", extra: str = "") -> bytes:
    return f'--b\r\nContent-Disposition: {disposition}; name="{name}"{extra}\r\n\r\n'.encode() + (
        data + b"\r\n"
    )


def test_random_forms_come_back_as_sent() -> None:
    rng = random.Random(7)
    for _ in range(300):
        files = [
            (rng.choice(["image", "images", "x"]), rng.randbytes(rng.randrange(0, 3000)))
            for _ in range(rng.randrange(1, 6))
        ]
        data = {"number": [str(rng.randrange(10)) for _ in range(rng.randrange(0, 3))]}
        body, boundary = _httpx_body(files, data)
        parsed = parse_form(body, boundary)
        expected: dict[str, list[bytes]] = {}
        for name, blob in files:
            expected.setdefault(name, []).append(blob)
        if data["number"]:
            expected["number"] = [n.encode() for n in data["number"]]
        assert parsed.parts == expected
        assert parsed.uploads == {name for name, _ in files} - set(data)  # filename = a file


def test_what_other_clients_send_is_read() -> None:
    """Header case and order, a part without a filename, an epilogue after the close."""
    body = (
        b"--xYz\r\ncontent-type: image/png\r\n"
        b'CONTENT-DISPOSITION: form-data; filename="a b.png"; name="image"\r\n\r\n'
        + bytes(range(256))
        + b'\r\n--xYz\r\nContent-Disposition: form-data; name="number"\r\n\r\n7\r\n--xYz--\r\n'
        b"an epilogue to ignore"
    )
    parsed = parse_form(body, b"xYz")
    assert parsed.file("image") == bytes(range(256))
    assert parsed.number("number") == 7


def test_boundary_inside_a_part_s_data_is_data() -> None:
    """CRLF, "--" and the boundary not followed by CRLF or "--" is no delimiter (python-multipart
    reads it so; the hand-written splitter this replaced answered 400)."""
    data = b"\r\n--bX\r\n--b-\r\n--\r\n-" + bytes(range(256))
    parsed = parse_form(_part("image", data, extra='; filename="d.png"') + b"--b--\r\n", b"b")
    assert parsed.file("image") == data


def test_attachment_disposition_is_read_by_its_name() -> None:
    body = _part("image", b"abc", "attachment", '; filename="d.png"') + _part("number", b"3")
    parsed = parse_form(body + b"--b--\r\n", b"b")
    assert (parsed.file("image"), parsed.number("number")) == (b"abc", 3)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"--other\r\n\r\n", "boundary absent"),
        (b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc', "no close"),
        (b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc\r\n--b', "cut"),
        (b'--b\r\nContent-Disposition: form-data; name="image"\r\nabc\r\n--b--', "headers"),
        (b"--b\r\nContent-Type: image/png\r\n\r\nabc\r\n--b--", "no name"),
        (b'--bjunk\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--b--', "junk"),
        (b"x--b\r\n\r\n\r\n--b--", "text before the first boundary"),
        (_part("image", b"x", extra="; a=b" * 1000) + b"--b--", "one header over 4 KB"),
        (b"--b\r\n" + b"X: y\r\n" * 9 + b'Content-Disposition: form-data; name="a"\r\n\r\n', "9+"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(MalformedForm):
        parse_form(body, b"b")


def test_too_many_parts_are_refused() -> None:
    with pytest.raises(MalformedForm, match="parts"):
        parse_form(_part("n", b"1") * (MAX_PARTS + 1) + b"--b--", b"b")
    assert len(parse_form(_part("n", b"1") * MAX_PARTS + b"--b--", b"b").parts["n"]) == MAX_PARTS


def test_many_near_misses_of_the_boundary_are_refused_before_parsing() -> None:
    """python-multipart steps through each near-miss in Python; a body made of them is refused
    by the part cap's count instead (5 MB of them took 2 s to parse)."""
    data = b"\r\n--bX" * (MAX_PARTS + 1)
    with pytest.raises(MalformedForm, match="parts"):
        parse_form(_part("image", data, extra='; filename="d.png"') + b"--b--\r\n", b"b")


@pytest.mark.parametrize("value", [b"10", b"-1", b"3.5", b"", b"two", b"\xd9\xa3", b"+3"])
def test_numbers_are_one_ascii_digit(value: bytes) -> None:
    with pytest.raises(FormFieldError):
        parse_number(value, "number")
    assert parse_number(b" 9 ", "number") == 9


# --- through the service ---------------------------------------------------------------------


def _assert_4xx_json(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_urlencoded_body_is_422_without_being_read(client: TestClient, path: str) -> None:
    """It cannot carry a file; answered from its Content-Type (it was a 500: a UnicodeEncodeError
    re-encoding the decoded euro sign as latin-1)."""
    response = client.post(
        path,
        content=b"number=%E2%82%AC&image=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    _assert_4xx_json(response, 422, "validation_error")
    assert "multipart/form-data" in response.json()["error"]["message"]


def test_five_megabyte_part_header_is_400(client: TestClient, good_png: bytes) -> None:
    """One part header of 5 MB (it was read, and answered 200, after 0.75 s of event loop)."""
    head = 'form-data; name="image"; filename="d.png"' + "; a=b" * 1_000_000
    body = (
        f"--b\r\nContent-Disposition: {head}\r\n\r\n".encode()
        + good_png
        + b'\r\n--b\r\nContent-Disposition: form-data; name="number"\r\n\r\n3\r\n--b--\r\n'
    )
    assert len(body) > 5_000_000
    response = client.post(
        "/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    _assert_4xx_json(response, 400, "bad_request")


def test_boundary_like_bytes_in_an_image_are_its_data(client: TestClient, good_png: bytes) -> None:
    """PNG readers ignore bytes after IEND: the delimiter's near-miss there is image data."""
    image = good_png + b"\r\n--b-not-a-delimiter\r\n"
    body = _part("image", image, extra='; filename="d.png"') + _part("number", b"3") + b"--b--"
    response = client.post(
        "/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 200, response.text


_HEADER_LINES = st.sampled_from(
    [
        b"Content-Type: image/png",
        b"Content-Type: text/plain; charset=utf-8",
        b"content-transfer-encoding: binary",
        b"X-Odd:",
        b"X-Odd:    spaced",
        b"Bad Header: x",
        b":no-name",
        b"Content-Disposition: form-data",
        b"Content-Disposition: attachment; filename=x",
    ]
)
_NAMES = st.sampled_from(["image", "images", "number", "numbers", "", "x", "\u20ac"])


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from([b"b", b"----WebKitFormBoundary7MA4YWxk", b"a-b"]))
    delimiter = b"\r\n--" + boundary
    data_atoms = st.sampled_from(
        [b"", b"3", b"\r\n", b"--", boundary, delimiter, delimiter + b"X", b"\r", b"\xff\xd8"]
    )
    out = bytearray(draw(st.sampled_from([b"", b"\r\n", b"preamble\r\n"])))
    for _ in range(draw(st.integers(0, 5))):
        out += b"--" + boundary + draw(st.sampled_from([b"\r\n", b" \r\n", b"X\r\n", b"\n"]))
        name = draw(_NAMES).encode()
        filename = draw(st.sampled_from([b"", b'; filename="d.png"', b"; filename="]))
        if draw(st.booleans()):
            out += b'Content-Disposition: form-data; name="' + name + b'"' + filename + b"\r\n"
        for line in draw(st.lists(_HEADER_LINES, max_size=3)):
            out += line + b"\r\n"
        out += b"\r\n" + b"".join(draw(st.lists(data_atoms, max_size=6))) + b"\r\n"
    out += draw(st.sampled_from([b"--" + boundary + b"--\r\n", b"--" + boundary, b""]))
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary.decode()}",
                f'multipart/form-data; boundary="{boundary.decode()}"',
                "multipart/form-data",
                "multipart/form-data; boundary=" + "x" * 300,
                "application/x-www-form-urlencoded",
                "text/plain",
                "",
            ]
        )
    )
    return bytes(out), content_type


@settings(max_examples=300, deadline=None)
@given(request=_bodies(), path=st.sampled_from(["/predict", "/predict/batch"]))
def test_no_generated_body_gets_a_5xx(
    client: TestClient, request: tuple[bytes, str], path: str
) -> None:
    body, content_type = request
    response = client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()["error"]) == {"code", "message", "field", "request_id"}
