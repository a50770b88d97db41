"""The form body of /predict and /predict/batch, read into memory and split into its parts.

Starlette's request.form() would spool every file through a SpooledTemporaryFile and FastAPI
would validate each field through pydantic: together more per request than decoding the image
and running the model on it (bench/). The body is bounded by RequestContextMiddleware (size,
stall and rate limits) before it gets here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import parse_qsl

from python_multipart.multipart import parse_options_header
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
    """Split a multipart/form-data body (RFC 7578, RFC 2046 section 5.1.1) into named parts.

    Byte searches in C (bytes.split, partition) rather than python-multipart's per-byte state
    machine, which took a fifth of the event loop per prediction under load (py-spy);
    python-multipart stays the reference: tests/app/test_forms.py checks both agree. Clients
    send the same few part headers again and again, so a part whose headers were read before
    costs one dictionary lookup.
    """
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise MalformedForm("the multipart boundary does not occur in the body")
    # Every part follows CRLF + delimiter; the close delimiter is followed by "--" instead.
    chunks = body[start + len(delimiter) :].split(b"\r\n" + delimiter)
    if len(chunks) > MAX_PARTS + 1:
        raise MalformedForm(f"more than {MAX_PARTS} parts in one form")
    parts: dict[str, list[bytes]] = defaultdict(list)
    files: set[str] = set()  # fields with a part sent as a file
    texts: set[str] = set()  # ... and with a part sent as text
    for chunk in chunks:
        # A part is the rest of the delimiter's line (padding), CRLF, headers, CRLF CRLF, data.
        head, blank_line, data = chunk.partition(b"\r\n\r\n")
        known = _KNOWN_HEADS.get(head) if blank_line else None
        if known is None:
            if chunk.startswith(b"--"):  # the close delimiter; what follows is an epilogue
                return Form(dict(parts), frozenset(files - texts))
            head, data = _split_part(chunk)
            known = _read_head(head)
        name, is_file = known
        parts[name].append(data)  # the part's one copy
        (files if is_file else texts).add(name)
    raise MalformedForm("the multipart body ends before its closing boundary")


def _split_part(chunk: bytes) -> tuple[bytes, bytes]:
    """A part's raw head (padding line and headers) and its data, or MalformedForm."""
    line_end = chunk.find(b"\r\n")  # the rest of the delimiter's line: padding only
    if line_end < 0 or chunk[:line_end].strip(b" \t"):
        raise MalformedForm("malformed multipart body: text after a boundary")
    if chunk.startswith(b"\r\n", line_end + 2):  # a part without headers
        return chunk[: line_end + 2], chunk[line_end + 4 :]
    head_end = chunk.find(b"\r\n\r\n", line_end + 2)
    if head_end < 0:
        raise MalformedForm("malformed multipart body: a part's headers do not end")
    return chunk[:head_end], chunk[head_end + 4 :]


# Raw heads already read (the padding line and headers of a part, as bytes) -> (field name,
# sent as a file). Bounded in both the size of a key and the number of keys: heads that no
# client sends twice (random names, long headers) are read every time instead of kept.
_KNOWN_HEADS: dict[bytes, tuple[str, bool]] = {}
_MAX_KNOWN_HEADS = 1024
_MAX_KNOWN_HEAD_BYTES = 512


def _read_head(head: bytes) -> tuple[str, bool]:
    """The field name of a part, and whether it was sent as a file (its Content-Disposition has
    a filename); remembered for the next part with the same head."""
    known = _read_part_name(head.partition(b"\r\n")[2])
    if len(head) <= _MAX_KNOWN_HEAD_BYTES and len(_KNOWN_HEADS) < _MAX_KNOWN_HEADS:
        _KNOWN_HEADS[head] = known
    return known


def _read_part_name(headers: bytes) -> tuple[str, bool]:
    for line in headers.split(b"\r\n"):
        field, colon, value = line.partition(b":")
        if colon and field.strip().lower() == b"content-disposition":
            kind, options = parse_options_header(value.strip())  # python-multipart's
            name = options.get(b"name") if kind == b"form-data" else None
            if name is not None:
                return name.decode("utf-8", "replace"), b"filename" in options
    raise MalformedForm("a form part without a Content-Disposition name")
