"""The service under the servers people start it with: our launcher with several workers, and
plain `uvicorn app.main:app`. Real processes on loopback ports (tests/reliability/live_server.py).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.reliability import live_server
from tests.reliability.conftest import Digit
from tests.scrape import value


@pytest.mark.slow
def test_plain_uvicorn_writes_the_same_json_access_log(tmp_path: Path, digit: Digit) -> None:
    port = live_server.free_port()
    server = live_server.start(
        tmp_path / "uvicorn.log", port, live_server.uvicorn_command(port), torch_threads=1
    )
    try:
        response = httpx.post(
            f"{server.url}/predict",
            files={"image": ("digit.png", digit.png, "image/png")},
            data={"number": "3"},
            headers={"X-Request-ID": "uvicorn-log-check"},
            timeout=30.0,
        )
        assert response.status_code == 200, response.text
    finally:
        live_server.ensure_stopped(server)
    records = server.log_records()  # every line one JSON object: uvicorn's own lines too
    access = [r for r in records if r.get("logger") == "digitsum.access"]
    mine = [r for r in access if r.get("request_id") == "uvicorn-log-check"]
    assert len(mine) == 1, access
    assert mine[0]["status"] == 200
    assert mine[0]["route"] == "/predict"
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)  # taken over too


# Two models loading at once on a small shared machine take longer than one.
WORKERS_START_TIMEOUT_S = 4 * live_server.START_TIMEOUT_S
PREDICT_OK = {"method": "POST", "route": "/predict", "status": "200"}


@pytest.mark.slow
def test_metrics_of_two_workers_are_summed_on_every_scrape(tmp_path: Path, digit: Digit) -> None:
    """With DIGITSUM_WORKERS=2, each scrape reaches one worker; each must still report the whole
    instance: N requests, wherever they went, are N on every scrape."""
    requests = 40
    server = live_server.launch(tmp_path / "workers.log", workers=2, torch_threads=1)
    try:
        live_server.wait_ready(server, WORKERS_START_TIMEOUT_S)

        def scrape() -> str:
            # a new connection each time, so that scrapes land on either worker
            response = httpx.get(f"{server.url}/metrics", timeout=30.0)
            assert response.status_code == 200
            return response.text

        # wait_ready saw one worker ready; each logs "ready" once its model is warm
        deadline = time.monotonic() + WORKERS_START_TIMEOUT_S
        while server.log_text().count('"message": "ready"') < 2:
            assert time.monotonic() < deadline, "the second worker never got ready"
            time.sleep(0.2)
        before = scrape()

        def predict(_: int) -> int:
            return httpx.post(
                f"{server.url}/predict",
                files={"image": ("digit.png", digit.png, "image/png")},
                data={"number": "3"},
                timeout=30.0,
            ).status_code

        with ThreadPoolExecutor(8) as pool:  # concurrent, on new connections: both workers serve
            assert list(pool.map(predict, range(requests))) == [200] * requests
        label = {"digit": str(digit.label)}
        for _ in range(10):
            after = scrape()
            served = value(after, "digitsum_requests_total", PREDICT_OK) - value(
                before, "digitsum_requests_total", PREDICT_OK
            )
            predicted = value(after, "digitsum_predictions_total", label) - value(
                before, "digitsum_predictions_total", label
            )
            assert (served, predicted) == (requests, requests)
            assert value(after, "digitsum_ready") == 1  # the least over both workers (livemin)
    finally:
        live_server.ensure_stopped(server)
    assert server.process.returncode == 0
