"""Admission: what one worker takes on at once, counted over all the work a request does.

The model's queue (app.inference.DynamicBatcher) is only the last step. Before it, a request's
body is read into memory and its photos wait for the decoding pool; each is bounded here, and a
request that would go over a bound is answered `503 overloaded` with Retry-After: before its
body is read where the headers tell (requests in flight, bytes declared by Content-Length, a
full decoding queue), else as soon as its count goes over (a chunked body, a batch's photos).
Everything here runs on the event loop, so plain integers need no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import Overloaded

OVERLOADED_MESSAGE = "the service is at capacity; retry shortly"


@dataclass
class Admission:
    """The counts of one worker's work in flight, against their limits (app.config.Settings)."""

    max_requests: int
    max_bytes: int
    max_decoding: int
    requests: int = 0  # requests with a body, from their headers to their answer
    bytes: int = 0  # their bodies' bytes: declared, or received beyond what was declared
    decoding: int = 0  # images waiting for or in the decoding pool

    def admit_request(self, declared_bytes: int) -> None:
        """Take on a request whose headers declare `declared_bytes` (0 when they do not say),
        or raise Overloaded: it would go over a limit, or the decoding pool is already full."""
        if (
            self.requests >= self.max_requests
            or self.bytes + declared_bytes > self.max_bytes
            or self.decoding >= self.max_decoding
        ):
            raise Overloaded(OVERLOADED_MESSAGE)
        self.requests += 1
        self.bytes += declared_bytes

    def add_bytes(self, count: int) -> None:
        """Bytes received beyond what the request declared: counted, and refused past the limit
        (what was counted is returned by `release`)."""
        self.bytes += count
        if self.bytes > self.max_bytes:
            raise Overloaded(OVERLOADED_MESSAGE)

    def release(self, counted_bytes: int) -> None:
        """The request is answered: its slot and the bytes counted for it are free again."""
        self.requests -= 1
        self.bytes -= counted_bytes

    def admit_decoding(self, images: int) -> None:
        """Queue `images` for the decoding pool, or raise Overloaded (all or none)."""
        if self.decoding + images > self.max_decoding:
            raise Overloaded(OVERLOADED_MESSAGE)
        self.decoding += images

    def done_decoding(self, images: int) -> None:
        self.decoding -= images
