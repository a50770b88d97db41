"""The service under the servers people start it with: our launcher with several workers, and
plain `uvicorn app.main:app`. Real processes on loopback ports (tests/reliability/live_server.py).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.reliability import live_server
from tests.reliability.conftest import Digit


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
