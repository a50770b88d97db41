"""Structured logs: one JSON object per line, with the request id where there is one.

Records are handed to a writer thread through a queue (the standard library's QueueHandler):
formatting and writing them never runs on the event loop, so a slow log sink (a full pipe, a
stalled collector) slows the log, not the clients. The writer wakes once per LOG_FLUSH_S and
writes everything queued since in one write per stream, rather than waking for each record as
the standard QueueListener does: with an access line per request, waking a thread per line
cost the service's one core more than formatting it (docs/performance.md).
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from typing import TextIO

# Longest a record waits on the queue before it is written, in seconds: short enough that a
# line is out before anyone reading the log notices, long enough that one wake-up writes the
# lines of many requests under load.
LOG_FLUSH_S = 0.05

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's extras."""

    _encoder = json.JSONEncoder(default=str)

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):  # "_": the handlers' own
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry)

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond; the part down to the second is made once a second
        (an access line per request makes this a hot path)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._stamp}.{int((created - second) * 1000):03d}+00:00"


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes each record to whatever sys.stderr was when it was logged (as logging's
    last-resort handler does, at the time of the record), so a handler made once outlives a
    test runner's swapping of the stream, and a line written later by the writer thread goes
    where it would have gone at once."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_many([record])

    def emit_many(self, records: list[logging.LogRecord]) -> None:
        """Write these records, one write and one flush per stream they go to."""
        lines: dict[int, tuple[TextIO, list[str]]] = {}
        for record in records:
            stream: TextIO = getattr(record, "_stderr", sys.stderr)
            if stream.closed:  # swapped out and closed since (a test runner's capture)
                stream = sys.stderr
            try:
                line = self.format(record)
            except Exception:
                self.handleError(record)
                continue
            lines.setdefault(id(stream), (stream, []))[1].append(line)
        for stream, text in lines.values():
            try:
                stream.write(self.terminator.join(text) + self.terminator)
                stream.flush()
            except Exception:
                self.handleError(records[-1])


class _Enqueue(QueueHandler):
    """Hands each record to the writer thread as it is, with its message merged (cheap, and
    safe if the arguments change later) and its traceback kept for the JSON formatter, which
    runs on that thread. The standard QueueHandler formats on the caller's thread instead."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        record._stderr = sys.stderr  # where the line goes, as of now (StderrHandler)
        return record


class _Writer:
    """The writer thread: every LOG_FLUSH_S, every record queued so far, written at once."""

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord], handler: StderrHandler
    ) -> None:
        self._records, self._handler = records, handler
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued and end the thread."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(LOG_FLUSH_S):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        records = []
        while True:
            try:
                records.append(self._records.get_nowait())
            except queue.Empty:
                break
        if records:
            self._handler.emit_many(records)


_writer: _Writer | None = None
_enqueue: _Enqueue | None = None


def _log_queue_handler() -> _Enqueue:
    """The process's one queue handler, and its writer thread (started the first time)."""
    global _writer, _enqueue
    if _enqueue is None:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        writer = StderrHandler()
        writer.setFormatter(JsonFormatter())
        _writer = _Writer(records, writer)
        _writer.start()
        _enqueue = _Enqueue(records)
        atexit.register(flush_logging)
    return _enqueue


def flush_logging() -> None:
    """Write every record still queued, and stop the writer thread (at exit: a process that
    ends with os._exit calls this itself). The next configure_logging starts a new writer;
    until then the root logger has no handler of ours."""
    global _writer, _enqueue
    if _writer is not None:
        _writer.stop()
        logging.getLogger().removeHandler(_enqueue)  # type: ignore[arg-type]
        _writer = _enqueue = None


def configure_logging(level: str) -> None:
    """JSON lines on stderr for our loggers and uvicorn's; uvicorn's access log stays off.

    Called by create_app (app/main.py), so every way of serving the app logs alike: `python -m
    app`, `uvicorn app.main:app`, `fastapi run` (each configures its own logging before it
    imports the app; this then takes over). Idempotent: it replaces only a handler it installed
    itself (one queue and one writer thread per process), and leaves any other on the root
    logger (a test runner's) in place.
    """
    handler = _log_queue_handler()
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Enqueue)] + [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "fastapi", "fastapi_cli"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # What our JSON lines never show, not collected per record (the logging HOWTO's
    # "Optimization"): one access line per request is on the event loop's hot path.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
