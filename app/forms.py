"""The multipart/form-data body of /predict and /predict/batch, read into memory in one pass.

python-multipart's parser (the one Starlette uses) fed the whole body, with the parts kept as
bytes: Starlette's request.form() would also spool every file through a SpooledTemporaryFile
and FastAPI would validate each field through pydantic, which cost more per request than
decoding the image and running the model on it together (bench/results). The body itself is
bounded by RequestContextMiddleware (size, stall and rate limits) before it gets here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from app.errors import ServiceError

# Starlette's defaults are 1,000 files and 1,000 fields; we need at most two parts per image.
MAX_PARTS = 1000


class MalformedForm(ServiceError):
    """The body is not well-formed multipart/form-data."""

    status, code = 400, "bad_request"


class FormFieldError(ServiceError):
    """A field is missing, repeated, or not a valid value; `field` names it."""

    status, code = 422, "validation_error"

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True)
class Form:
    """The parts of one body by field name, in the order they came."""

    parts: dict[str, list[bytes]]

    def files(self, name: str) -> list[bytes]:
        return self.parts.get(name, [])

    def file(self, name: str) -> bytes:
        """The one upload named `name`."""
        return self._one(name, "an image file")

    def number(self, name: str) -> int:
        """The one field `name`, an integer 0..9."""
        return parse_number(self._one(name, "a number 0..9"), name)

    def numbers(self, name: str) -> list[int]:
        return [parse_number(value, f"{name}[{i}]") for i, value in enumerate(self.files(name))]

    def _one(self, name: str, what: str) -> bytes:
        values = self.parts.get(name, [])
        if not values:
            raise FormFieldError(f"{name}: field required ({what})", name)
        if len(values) > 1:
            # Keeping the first or the last of several would answer for an image nobody chose.
            raise FormFieldError(
                f"send one {name} field, not {len(values)}; /predict/batch takes many images",
                name,
            )
        return values[0]


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, read as FastAPI's `bool` parameters are; absent = False."""
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise FormFieldError(f"{name}: expected true or false, got {value[:20]!r}", name)


def parse_number(value: bytes, field: str) -> int:
    text = value.strip()
    if len(text) == 1 and text.isdigit():  # ASCII 0..9 only; "12", "-1", "3.5" are not
        return text[0] - 48
    shown = value[:20].decode("utf-8", "replace")
    raise FormFieldError(f"{field}: expected an integer 0..9, got {shown!r}", field)


async def read_form(request: Request) -> Form:
    """Read and parse the body; 422 when it is not a form, 400 when it is a malformed one.

    A URL-encoded form is read too (it cannot carry a file, so the answer names the missing
    image rather than the encoding, as FastAPI's Form() parameters would)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":
        fields = parse_qsl((await request.body()).decode("latin-1"), keep_blank_values=True)
        if len(fields) > MAX_PARTS:
            raise MalformedForm(f"more than {MAX_PARTS} fields in one form")
        parts: dict[str, list[bytes]] = defaultdict(list)
        for name, value in fields:
            parts[name].append(value.encode("latin-1"))
        return Form(dict(parts))
    if content_type != b"multipart/form-data":
        raise FormFieldError(
            "send multipart/form-data (curl -F image=@digit.png -F number=5), "
            f"not {content_type.decode('latin-1') or 'no content type'}",
            None,
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedForm("multipart/form-data without a boundary parameter")
    return parse_form(await request.body(), boundary)


def parse_form(body: bytes, boundary: bytes) -> Form:
    parts: dict[str, list[bytes]] = defaultdict(list)
    header_name, header_value, data = bytearray(), bytearray(), bytearray()
    name: str | None = None
    count = 0

    def on_part_begin() -> None:
        nonlocal name, count
        count += 1
        if count > MAX_PARTS:
            raise MalformedForm(f"more than {MAX_PARTS} parts in one form")
        name = None
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        header_name.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])

    def on_header_end() -> None:
        nonlocal name
        if header_name.lower() == b"content-disposition":
            _, options = parse_options_header(bytes(header_value))
            if b"name" in options:
                name = options[b"name"].decode("utf-8", "replace")
        header_name.clear()
        header_value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        if name is None:
            raise MalformedForm("a form part without a Content-Disposition name")
        parts[name].append(bytes(data))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
    except MultipartParseError as exc:
        raise MalformedForm(f"malformed multipart body: {exc}") from None
    if parser.state != MultipartState.END:
        raise MalformedForm("the multipart body ends before its closing boundary")
    return Form(dict(parts))
