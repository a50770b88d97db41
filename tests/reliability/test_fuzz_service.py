"""The live service under generated hostile images, mixed with good ones in the same batches:
every good request answers 200 with its digit, and nothing answers 5xx.

Each example sends its hostile images and MNIST digits at once, as concurrent POST /predict
(gathered into shared forward passes by the batcher's wait) and as one /predict/batch with the
entries interleaved. `make test` runs a bounded number of examples; `make fuzz` a long run
(DIGITSUM_FUZZ_EXAMPLES), whose figures are in docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.degenerate import Case, image_files
from tests.imagegen import mnist_png
from tests.reliability import live_server
from training.data import Split

EXAMPLES = max(1, int(os.environ.get("DIGITSUM_FUZZ_EXAMPLES", "150")) // 15)
GOOD_PER_EXAMPLE = 8
GATHER_MS = 20  # the batcher waits this long, so concurrent requests share forward passes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live_server.LiveServer]:
    running = live_server.start(
        tmp_path_factory.mktemp("fuzz") / "server.log",
        batch_max_wait_ms=GATHER_MS,
        log_level="warning",
    )
    yield running
    live_server.ensure_stopped(running)


@pytest.fixture(scope="module")
def good(mnist_test: Split) -> list[tuple[bytes, int]]:
    return [(mnist_png(mnist_test.images[i]), int(mnist_test.labels[i])) for i in range(64)]


def _check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text}"


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(hostile=st.lists(image_files(), min_size=1, max_size=8), start=st.integers(0, 56))
def test_good_requests_are_answered_beside_hostile_ones(
    server: live_server.LiveServer,
    good: list[tuple[bytes, int]],
    hostile: list[Case],
    start: int,
) -> None:
    digits = good[start : start + GOOD_PER_EXAMPLE]
    uploads: list[tuple[bytes, int | None, str]] = [(png, label, "good") for png, label in digits]
    for k, case in enumerate(hostile):
        uploads.insert((2 * k + 1) % (len(uploads) + 1), (case.data, None, case.name))

    def post(upload: tuple[bytes, int | None, str]) -> httpx.Response:
        data, _, _ = upload
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post(
                "/predict", files={"image": ("f", data, "image/png")}, data={"number": "2"}
            )

    with ThreadPoolExecutor(len(uploads)) as pool:
        responses = list(pool.map(post, uploads))
    for (_, label, name), response in zip(uploads, responses, strict=True):
        _check(response, name)
        if label is not None:
            assert response.status_code == 200, response.text
            assert response.json()["sum"] == label + 2

    with httpx.Client(base_url=server.url, timeout=60) as client:
        batch = client.post(
            "/predict/batch",
            files=[("images", ("f", data, "image/png")) for data, _, _ in uploads],
            data={"numbers": ["2"] * len(uploads)},
        )
    _check(batch, "batch")
    assert batch.status_code == 200, batch.text
    for (_, label, name), result in zip(uploads, batch.json()["results"], strict=True):
        if label is not None:
            assert result["prediction"]["sum"] == label + 2, name
        elif "error" in result:
            assert result["error"]["code"] != "internal_error", name
