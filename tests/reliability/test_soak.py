"""Soak: minutes of steady load with the server's memory sampled; zero errors, bounded growth.

    DIGITSUM_SOAK_S=600 .venv/bin/python -m pytest tests/reliability/test_soak.py -s

wrk (the bench harness's driver, bench/wrk.py) posts one MNIST digit to /predict over
CONNECTIONS keep-alive connections for DIGITSUM_SOAK_S seconds (60 by default, for CI), while a
thread samples the server's RSS every second. After a warm-up, the RSS may grow by at most
RSS_GROWTH_BOUND; any socket error, timeout or non-2xx answer fails the run. The service logs
at info level, one access line per request, as in production.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.payload import CONTENT_TYPE, single_body
from bench.wrk import run_wrk
from tests.reliability import live_server
from tests.reliability.conftest import Digit, assert_predicts

SOAK_S = int(os.environ.get("DIGITSUM_SOAK_S", "60"))
CONNECTIONS = 8
WARM_UP_S = 10.0  # allocator arenas, metric series, thread stacks: settled by then
RSS_GROWTH_BOUND = 32 * 2**20
SAMPLE_EVERY_S = 1.0


def _wrk() -> None:
    if shutil.which("wrk"):
        return
    message = "wrk is not installed (Debian: apt-get install wrk; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: under CI the soak must run")
    pytest.skip(message)


@pytest.mark.slow
@pytest.mark.timeout(SOAK_S + 120)  # the suite-wide 300 s would cut a longer soak short
def test_steady_load_has_no_errors_and_bounded_memory(
    tmp_path: Path, digit: Digit, report: Callable[..., None]
) -> None:
    _wrk()
    assert SOAK_S >= 2 * WARM_UP_S, "DIGITSUM_SOAK_S must leave time after the warm-up"
    body = tmp_path / "body"
    body.write_bytes(single_body(digit.png, 3))
    server = live_server.start(tmp_path / "server.log")
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(SAMPLE_EVERY_S):
            samples.append((time.monotonic() - started, server.rss_bytes()))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        rss_idle = server.rss_bytes()
        sampler.start()
        result = run_wrk(
            f"{server.url}/predict",
            body,
            CONTENT_TYPE,
            connections=CONNECTIONS,
            duration_s=SOAK_S,
            client_cpus=None,
        )
        stop.set()
        sampler.join(5)
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            assert_predicts(client, digit)
            metrics = client.get("/metrics").text
    finally:
        stop.set()
        live_server.ensure_stopped(server)

    settled = [rss for t, rss in samples if t >= WARM_UP_S]
    assert settled, "no sample after the warm-up"
    growth = max(settled) - settled[0]
    report(
        "soak",
        seconds=SOAK_S,
        connections=CONNECTIONS,
        requests=result.requests,
        requests_per_s=round(result.requests_per_s, 1),
        errors=result.errors,
        p50_ms=round(result.p50_ms, 2),
        p99_ms=round(result.p99_ms, 2),
        max_ms=round(result.max_ms, 2),
        rss_idle_mib=round(rss_idle / 2**20, 1),
        rss_after_warm_up_mib=round(settled[0] / 2**20, 1),
        rss_max_mib=round(max(settled) / 2**20, 1),
        rss_growth_mib=round(growth / 2**20, 1),
    )
    assert result.requests > 0
    assert result.errors == 0, result
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB after the warm-up"
    assert 'digitsum_errors_total{code="internal_error"}' not in metrics
    assert '"level": "error"' not in server.log_text()
