"""The form body of /predict and /predict/batch, parsed by python-multipart into named parts.

python-multipart (the parser Starlette and FastAPI use) is called directly, with callbacks that
keep each part's bytes in memory: Starlette's request.form() would spool every file through a
SpooledTemporaryFile, written in a thread. The body is bounded by RequestContextMiddleware (size,
stall and rate limits) before it gets here; the parser's own limits bound each part's headers.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import ServiceError

# Starlette's defaults are 1,000 files and 1,000 fields. The service's cap is derived from
# DIGITSUM_MAX_BATCH_IMAGES (Settings.max_form_parts: two parts per image, and a few spare);
# this is the parser's default where no cap is given.
MAX_PARTS = 1000
# python-multipart's own defaults, stated: headers per part, and bytes in one header line.
MAX_PART_HEADERS = 8
MAX_HEADER_BYTES = 4096 + 128
# A body larger than this is parsed in slices of this size, with a turn of the event loop
# between them (read_form).
SLICE_BYTES = 16 * 1024


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
    """The parts of one body by field name, in the order they came; `uploads` names the fields
    sent as files (parts with a filename, as `curl -F image=@digit.png` and browsers send)."""

    parts: dict[str, list[bytes]]
    uploads: frozenset[str] = frozenset()

    def files(self, name: str) -> list[bytes]:
        """The uploads named `name`; a text field of that name is refused, as FastAPI's File()
        parameters refuse it, rather than read as an image that cannot be decoded."""
        values = self.parts.get(name, [])
        if values and name not in self.uploads:
            raise FormFieldError(f"{name}: expected a file upload, got a text field", name)
        return values

    def file(self, name: str) -> bytes:
        """The one upload named `name`."""
        (value,) = self._one(name, "an image file", self.files(name))
        return value

    def number(self, name: str) -> int:
        """The one field `name`, an integer 0..9."""
        (value,) = self._one(name, "a number 0..9", self.parts.get(name, []))
        return parse_number(value, name)

    def numbers(self, name: str) -> list[int]:
        values = self.parts.get(name, [])
        return [parse_number(value, f"{name}[{i}]") for i, value in enumerate(values)]

    @staticmethod
    def _one(name: str, what: str, values: list[bytes]) -> list[bytes]:
        if not values:
            raise FormFieldError(f"{name}: field required ({what})", name)
        if len(values) > 1:
            # Keeping the first or the last of several would answer for an image nobody chose.
            raise FormFieldError(
                f"send one {name} field, not {len(values)}; /predict/batch takes many images",
                name,
            )
        return values


_DIGITS = {str(n).encode(): n for n in range(10)}
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, read as FastAPI's `bool` parameters are; absent = False."""
    if not request.scope["query_string"]:
        return False
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise FormFieldError(f"{name}: expected true or false, got {value[:20]!r}", name)


def parse_number(value: bytes, field: str) -> int:
    number = _DIGITS.get(value)
    if number is not None:  # the usual case, one lookup
        return number
    text = value.strip()
    if len(text) == 1 and text.isdigit():  # ASCII 0..9 only; "12", "-1", "3.5" are not
        return text[0] - 48
    shown = value[:20].decode("utf-8", "replace")
    raise FormFieldError(f"{field}: expected an integer 0..9, got {shown!r}", field)


async def read_form(request: Request, max_parts: int = MAX_PARTS) -> Form:
    """Read and parse the body: 422 when it is not multipart/form-data, 400 when it is a
    malformed one (among others, one of more than `max_parts` parts).

    Any other content type is answered from the header alone, its body neither read nor
    decoded: a URL-encoded form, say, cannot carry the image file."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        shown = content_type[:60].decode("ascii", "replace") or "no content type"
        raise FormFieldError(
            f"send multipart/form-data (curl -F image=@digit.png -F number=5), not {shown}", None
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedForm("multipart/form-data without a boundary parameter")
    body = await request.body()
    if len(body) <= SLICE_BYTES:
        return parse_form(body, boundary, max_parts)
    # python-multipart reads some bytes one at a time in Python (spaces before a header value,
    # near-misses of the boundary): a body built of them takes seconds to parse. Fed in slices,
    # it holds the event loop, and so every other request of this worker, for one slice at a
    # time, never for the whole body.
    reader = FormReader(body, boundary, max_parts)
    for at in range(0, len(body), SLICE_BYTES):
        reader.write(body[at : at + SLICE_BYTES])
        await asyncio.sleep(0)
    return reader.form()


def parse_form(body: bytes, boundary: bytes, max_parts: int = MAX_PARTS) -> Form:
    """A whole multipart/form-data body (RFC 7578), parsed by python-multipart in one call."""
    reader = FormReader(body, boundary, max_parts)
    reader.write(body)
    return reader.form()


class FormReader:
    """python-multipart's MultipartParser, with callbacks that keep the parts in memory by field
    name; feed it `body` with write(), in one piece or several, then take form().

    A body with more delimiters (CRLF, "--", the boundary) than `max_parts` is refused before
    any parsing, by one count in C: it has too many parts, or near-misses of the boundary in its
    data, which python-multipart steps through a byte at a time."""

    def __init__(self, body: bytes, boundary: bytes, max_parts: int = MAX_PARTS) -> None:
        self.max_parts = max_parts
        if body.count(b"\r\n--" + boundary) > max_parts:
            raise MalformedForm(f"more than {max_parts} parts in one form")
        self.parts: dict[str, list[bytes]] = {}
        self._files: set[str] = set()  # fields with a part sent as a file
        self._texts: set[str] = set()  # ... and with a part sent as text
        self._count = 0
        self._ended = False
        self._name = ""
        self._data: list[bytes] = []
        self._header_field = b""
        self._header_value = b""
        self._disposition: bytes | None = None
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field_data,
                    "on_header_value": self._header_value_data,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
                max_header_count=MAX_PART_HEADERS,
                max_header_size=MAX_HEADER_BYTES,
            )
        except FormParserError as exc:  # a boundary over python-multipart's 256 bytes
            raise MalformedForm(f"malformed multipart body: {exc}") from exc

    def write(self, data: bytes) -> None:
        """Parse the next piece of the body; MalformedForm when python-multipart refuses it."""
        try:
            self._parser.write(data)
        except FormParserError as exc:
            raise MalformedForm(f"malformed multipart body: {exc}") from exc

    def form(self) -> Form:
        """The parts read, once the whole body has been written."""
        if not self._ended:
            raise MalformedForm("the multipart body ends before its closing boundary")
        return Form(self.parts, frozenset(self._files - self._texts))

    def _part_begin(self) -> None:
        self._count += 1
        if self._count > self.max_parts:
            raise MalformedForm(f"more than {self.max_parts} parts in one form")
        self._data = []
        self._disposition = None

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        self._name, is_file = _disposition(self._disposition)
        (self._files if is_file else self._texts).add(self._name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data.append(data[start:end])

    def _part_end(self) -> None:
        data = self._data[0] if len(self._data) == 1 else b"".join(self._data)
        self.parts.setdefault(self._name, []).append(data)

    def _end(self) -> None:
        self._ended = True


# Clients send the same few Content-Disposition values again and again, and reading one with
# python-multipart's parse_options_header costs as much as the rest of a small form. A value is
# at most MAX_HEADER_BYTES (the parser refuses longer lines), so the cache holds at most a few MB.
@functools.lru_cache(maxsize=256)
def _disposition(value: bytes | None) -> tuple[str, bool]:
    """A part's field name, and whether it was sent as a file, read from its Content-Disposition
    as Starlette reads them: the name whatever the type (form-data, attachment); a filename makes
    the part a file."""
    options = parse_options_header(value)[1]
    name = options.get(b"name")
    if name is None:
        raise MalformedForm("a form part without a Content-Disposition name")
    return name.decode("utf-8", "replace"), b"filename" in options
