"""The log is written by its own thread: a log sink that blocks slows the log, not the clients."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.logs import flush_logging
from app.main import create_app
from tests.conftest import make_settings

SINK_STALL_S = 1.0
LIVE_BUDGET_S = 0.1  # the bound on GET /health/live's delay


class StalledSink(io.StringIO):
    """stderr that takes SINK_STALL_S for every write (a full pipe, a stalled log collector)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        time.sleep(SINK_STALL_S)
        with self.lock:
            self.writes += 1
            return super().write(text)


def test_a_blocked_log_sink_does_not_delay_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = StalledSink()
    with TestClient(create_app(make_settings(log_level="info"))) as client:
        monkeypatch.setattr(sys, "stderr", sink)
        worst = 0.0
        for _ in range(3):  # each answer logs an access line, each line stalls its writer
            started = time.perf_counter()
            assert client.get("/health/live").status_code == 200
            worst = max(worst, time.perf_counter() - started)
        assert worst < LIVE_BUDGET_S, f"GET /health/live took {worst * 1e3:.0f} ms"
        assert sink.writes < 3  # the writer is still stalled on the lines behind it
        flush_logging()  # every line queued is written in the end, none is lost
        lines = [json.loads(line) for line in sink.getvalue().splitlines() if line.strip()]
        assert sum(1 for line in lines if line.get("path") == "/health/live") == 3


class CountingSink(io.StringIO):
    """stderr that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_records_logged_together_are_written_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer wakes once per LOG_FLUSH_S, not once per record: a burst of records (the
    access lines of many requests) goes out in a write or two, in the order logged."""
    create_app(make_settings(log_level="info"))  # configures the process's logging
    sink = CountingSink()
    monkeypatch.setattr(sys, "stderr", sink)  # lines logged from now on go here
    log = logging.getLogger("digitsum.access")
    for i in range(200):
        log.info("line %d", i, extra={"request_id": f"req-{i}"})
    flush_logging()
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"req-{i}" for i in range(200)]
    assert sink.writes <= 4
