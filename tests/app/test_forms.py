"""app.forms: the fast multipart split agrees with python-multipart, and refuses what is broken."""

from __future__ import annotations

import random
from collections import defaultdict

import httpx
import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from app import forms
from app.forms import FormFieldError, MalformedForm, parse_form, parse_number


def _reference(body: bytes, boundary: bytes) -> dict[str, list[bytes]]:
    """What python-multipart (Starlette's parser) reads from the same body."""
    parts: dict[str, list[bytes]] = defaultdict(list)
    state: dict[str, object] = {}

    def header_field(data: bytes, start: int, end: int) -> None:
        state["field"] = bytes(state.get("field", b"")) + data[start:end]  # type: ignore[operator]

    def header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = bytes(state.get("value", b"")) + data[start:end]  # type: ignore[operator]

    def header_end() -> None:
        if bytes(state.pop("field", b"")).lower() == b"content-disposition":  # type: ignore[arg-type]
            state["name"] = parse_options_header(state["value"])[1][b"name"].decode()
        state.pop("value", None)

    def part_begin() -> None:
        state["data"] = b""

    def part_data(data: bytes, start: int, end: int) -> None:
        state["data"] = bytes(state["data"]) + data[start:end]  # type: ignore[operator]

    def part_end() -> None:
        parts[str(state["name"])].append(bytes(state["data"]))  # type: ignore[arg-type]

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_begin": part_begin,
            "on_part_data": part_data,
            "on_part_end": part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return dict(parts)


def _httpx_body(files: list[tuple[str, bytes]], data: dict[str, list[str]]) -> tuple[bytes, bytes]:
    request = httpx.Request(
        "POST",
        "http://x/predict",
        files=[(name, ("f.png", blob, "image/png")) for name, blob in files],
        data=data,
    )
    boundary = parse_options_header(request.headers["content-type"])[1][b"boundary"]
    return request.read(), boundary


def test_agrees_with_python_multipart_on_random_forms() -> None:
    rng = random.Random(7)
    for _ in range(300):
        files = [
            (rng.choice(["image", "images", "x"]), rng.randbytes(rng.randrange(0, 3000)))
            for _ in range(rng.randrange(1, 6))
        ]
        data = {"number": [str(rng.randrange(10)) for _ in range(rng.randrange(0, 3))]}
        body, boundary = _httpx_body(files, data)
        parsed = parse_form(body, boundary)
        assert parsed.parts == _reference(body, boundary)
        assert parsed.uploads == {name for name, _ in files} - set(data)  # filename = a file


def test_agrees_on_what_other_clients_send() -> None:
    """Header case and order, a part without a filename, data with CRLFs and near-boundaries;
    and what RFC 2046 allows beyond python-multipart: a preamble, an epilogue, padding."""
    boundary = b"xYz"
    data = b"\r\n--xY\r\na--xYz" + bytes(range(256))  # not a delimiter: no CRLF before "--xYz"
    parts = (
        b"content-type: image/png\r\n"
        b'CONTENT-DISPOSITION: form-data; filename="a b.png"; name="image"\r\n\r\n'
        + data
        + b"\r\n--xYz\r\n"
        b'Content-Disposition: form-data; name="number"\r\n\r\n'
        b"7\r\n--xYz--"
    )
    body = b"--xYz\r\n" + parts + b"\r\n"
    parsed = parse_form(body, boundary)
    assert parsed.parts == _reference(body, boundary)
    assert parsed.file("image") == data
    assert parsed.number("number") == 7
    rfc = b"a preamble to ignore\r\n--xYz \t\r\n" + parts + b"\r\nan epilogue to ignore"
    assert parse_form(rfc, boundary) == parsed


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
        (b"x--b\r\n\r\n\r\n--b--", "no CRLF before the first boundary"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    # The same part headers in a good body first: what was read from them is remembered, and
    # must not let a malformed body through.
    good = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc\r\n--b--'
    assert parse_form(good, b"b").parts == {"image": [b"abc"]}
    with pytest.raises(MalformedForm):
        parse_form(body, b"b")


def test_remembered_part_headers_are_bounded() -> None:
    """Part headers are remembered, but not without bound: random field names and long
    headers are read each time, with the same answers."""
    for names in (range(0, 900), range(900, 1800)):  # more distinct heads than are kept
        body = b"".join(
            b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n%d\r\n' % (n, n)
            for n in names
        )
        body += b"--b--"
        assert parse_form(body, b"b").parts == _reference(body, b"b")
    long_name = "n" * 600
    body = f'--b\r\nContent-Disposition: form-data; name="{long_name}"\r\n\r\n1\r\n--b--'
    assert parse_form(body.encode(), b"b").parts == {long_name: [b"1"]}
    assert len(forms._KNOWN_HEADS) <= forms._MAX_KNOWN_HEADS
    assert all(len(head) <= forms._MAX_KNOWN_HEAD_BYTES for head in forms._KNOWN_HEADS)


def test_too_many_parts_are_refused() -> None:
    part = b'--b\r\nContent-Disposition: form-data; name="n"\r\n\r\n1\r\n'
    with pytest.raises(MalformedForm, match="parts"):
        parse_form(part * 1001 + b"--b--", b"b")


@pytest.mark.parametrize("value", [b"10", b"-1", b"3.5", b"", b"two", b"\xd9\xa3", b"+3"])
def test_numbers_are_one_ascii_digit(value: bytes) -> None:
    with pytest.raises(FormFieldError):
        parse_number(value, "number")
    assert parse_number(b" 9 ", "number") == 9
