"""Fixtures of the reliability suites: a digit the model reads right, and the answers' checks.

Each module starts its own `python -m app` (tests/reliability/live_server.py): with the defaults
through the `server` fixture below, or with the settings it needs through its own `server`;
nothing here runs in-process except where a test says so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.imagegen import mnist_png
from tests.reliability import live_server
from training.data import Split


@dataclass(frozen=True)
class Digit:
    """An MNIST test image as a PNG upload, and its label."""

    png: bytes
    label: int


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[live_server.LiveServer]:
    """The service with its default settings, one per test module."""
    log = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "server.log"
    running = live_server.start(log)
    yield running
    live_server.ensure_stopped(running)


@pytest.fixture
def client(server: live_server.LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of the module's own `server` fixture (each module starts its own)."""
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="session")
def digit(mnist_test: Split) -> Digit:
    return Digit(mnist_png(mnist_test.images[0]), int(mnist_test.labels[0]))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    """The documented error answer: the status, JSON of the one shape, the request id echoed."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field", "request_id"}
    assert error["code"] == code, error
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    for leak in ("Traceback", 'File "', "site-packages", str(REPO_ROOT)):
        assert leak not in response.text, leak
    return dict(error)


def assert_predicts(client: httpx.Client, digit: Digit, number: int = 3) -> None:
    """A normal request gets the right answer (the check run after every hostile one)."""
    response = client.post(
        "/predict",
        files={"image": ("digit.png", digit.png, "image/png")},
        data={"number": str(number)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == digit.label
    assert body["sum"] == digit.label + number


@pytest.fixture(scope="session")
def report() -> Callable[..., None]:
    """Record a suite's figures: printed (see them with -s), and appended as one JSON line to
    the file named by DIGITSUM_RELIABILITY_REPORT when it is set (docs/reliability.md's source)."""
    target = os.environ.get("DIGITSUM_RELIABILITY_REPORT")

    def record(suite: str, **figures: object) -> None:
        line = json.dumps({"suite": suite, **figures}, sort_keys=True)
        print(f"\nRELIABILITY {line}")
        if target:
            with Path(target).open("a") as out:
                out.write(line + "\n")

    return record


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]
