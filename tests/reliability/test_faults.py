"""Faults: a bad model file at start-up, and SIGTERM in the middle of a load.

    .venv/bin/python -m pytest tests/reliability/test_faults.py

A server that cannot load its model must say why and exit non-zero before it serves anything
(never a half-ready server); a server told to stop must finish what it has accepted. The loader's
unit tests are in tests/app/test_inference.py; a training run killed mid-epoch is
tests/training/test_trainer.py::test_run_killed_mid_epoch_leaves_outputs_untouched_and_resumes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.imagegen import largest_drawing_png
from tests.reliability import live_server
from tests.reliability.conftest import Digit, assert_error

EXIT_TIMEOUT_S = 60.0  # import torch, try to load, exit: seconds on a busy machine


def _model_files(tmp: Path) -> dict[str, Path]:
    files = {
        "missing": tmp / "absent.pt",
        "empty": tmp / "empty.pt",
        "truncated": tmp / "truncated.pt",
        "not TorchScript": tmp / "pickle.pt",
        "another TorchScript module": tmp / "linear.pt",
    }
    files["empty"].write_bytes(b"")
    data = live_server.SERVED_MODEL.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(3)}, files["not TorchScript"])  # a plain pickle
    torch.jit.save(
        torch.jit.script(torch.nn.Linear(4, 2)), str(files["another TorchScript module"])
    )
    return files


EXPECTED_MESSAGE = {
    "missing": "model file not found",
    "empty": "not a loadable TorchScript file",
    "truncated": "not a loadable TorchScript file",
    "not TorchScript": "not a loadable TorchScript file",
    "another TorchScript module": "does not follow the digitsum contract",
}


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_bad_model_file_stops_python_m_app_with_a_message_and_status_2(tmp_path: Path) -> None:
    for kind, path in _model_files(tmp_path).items():
        server = live_server.launch(tmp_path / f"{kind}.log", model_path=path)
        status = server.process.wait(EXIT_TIMEOUT_S)
        log = server.log_text()
        assert status == 2, f"{kind}: exit {status}\n{log}"
        assert EXPECTED_MESSAGE[kind] in log, f"{kind}: {log}"
        assert "cannot start" in log
        assert "Traceback" not in log, f"{kind}: a traceback instead of a message\n{log}"
        assert "Application startup complete" not in log
        assert _port_is_closed(server.port)


@pytest.mark.slow
def test_bad_model_file_stops_plain_uvicorn_too(tmp_path: Path) -> None:
    """`uvicorn app.main:app` has no pre-flight check: the lifespan fails, and uvicorn exits
    non-zero without ever accepting a connection."""
    port = live_server.free_port()
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
        cwd=REPO_ROOT,
        env=live_server.server_env(port, model_path=tmp_path / "absent.pt"),
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
    )
    assert done.returncode != 0
    assert "model file not found" in done.stderr + done.stdout
    assert "Application startup failed" in done.stderr + done.stdout
    assert _port_is_closed(port)


@pytest.mark.slow
def test_bad_setting_stops_python_m_app_naming_the_variable(tmp_path: Path) -> None:
    server = live_server.launch(tmp_path / "setting.log", max_queue="zero")
    assert server.process.wait(EXIT_TIMEOUT_S) == 2
    log = server.log_text()
    assert "DIGITSUM_MAX_QUEUE" in log
    assert "Traceback" not in log


# --- SIGTERM under load -------------------------------------------------------------------

DRAIN_DELAY_S = 1.5  # readiness and new predictions answer 503 this long before the close
GRACEFUL_TIMEOUT_S = 15.0
LOAD_CLIENTS = 6
IMAGES_PER_REQUEST = 16


@dataclass
class Sent:
    """One request of the load: when it started and ended (time.monotonic()) and how."""

    started: float
    ended: float
    outcome: str  # "200", "503 draining", or what went wrong


@dataclass
class Load:
    """Clients that keep sending until they are told the instance is draining (as a load
    balancer would stop routing to it), then stop."""

    url: str
    body: bytes
    content_type: str
    signalled_at: list[float] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, close: bool = False) -> httpx.Response:
        headers = {"content-type": self.content_type}
        if close:
            headers["connection"] = "close"
        return httpx.post(
            f"{self.url}/predict/batch", content=self.body, headers=headers, timeout=30.0
        )

    def client(self, deadline: float) -> None:
        # one connection per request: a keep-alive connection closed by the server between two
        # requests is a retry for the client library, not a loss at the server
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = self.post(close=True)
                if response.status_code == 503:
                    outcome = f"503 {response.json()['error']['code']}"
                    assert response.headers["retry-after"]
                else:
                    outcome = str(response.status_code)
            except Exception as exc:  # anything, even a bug here, is recorded, not lost
                outcome = repr(exc)
            with self.lock:
                self.sent.append(Sent(started, time.monotonic(), outcome))
            if outcome != "200":
                return


def _wait_for_decoding(url: str, timeout_s: float = 20.0) -> None:
    """Until /metrics shows an image waiting for or in the decoding pool."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5.0).text
        if any(
            line.startswith("digitsum_decode_queue ") and float(line.split()[1]) >= 1
            for line in text.splitlines()
        ):
            return
        time.sleep(0.01)
    raise AssertionError("the big image never reached the decoding pool")


def _slow_upload(port: int, body: bytes, head: bytes, pieces: int, pause_s: float) -> str:
    """Send one request's body in pieces with pauses (in flight across the signal); return the
    status line, or the error."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head)
            size = -(-len(body) // pieces)
            for i in range(0, len(body), size):
                sock.sendall(body[i : i + size])
                time.sleep(pause_s)
            answer = sock.recv(65536).split(b"\r\n", 1)[0].decode()
            return answer
    except OSError as exc:
        return f"error: {exc!r}"


@pytest.mark.slow
def test_sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones(
    tmp_path: Path, digit: Digit, report: Callable[..., None]
) -> None:
    server = live_server.start(
        tmp_path / "server.log",
        drain_delay_s=DRAIN_DELAY_S,
        graceful_timeout_s=GRACEFUL_TIMEOUT_S,
        max_batch_images=IMAGES_PER_REQUEST,
        log_level="warning",
    )
    try:
        files = [
            ("images", (f"{i}.png", digit.png, "image/png")) for i in range(IMAGES_PER_REQUEST)
        ]
        encoded = httpx.Request(
            "POST", server.url, files=files, data={"numbers": ["3"] * IMAGES_PER_REQUEST}
        )
        body = encoded.read()
        content_type = encoded.headers["content-type"]
        load = Load(server.url, body, content_type)
        deadline = time.monotonic() + 30
        threads = [
            threading.Thread(target=load.client, args=(deadline,), daemon=True)
            for _ in range(LOAD_CLIENTS)
        ]
        for thread in threads:
            thread.start()

        # A request whose body is still arriving when the signal comes: 3 pieces, 0.6 s apart.
        head = (
            f"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        slow_answer: list[str] = []
        slow = threading.Thread(
            target=lambda: slow_answer.append(_slow_upload(server.port, body, head, 3, 0.6))
        )
        # And one being decoded when the signal comes: 25 Mpx take about half a second.
        big = largest_drawing_png()
        big_answer: list[int] = []
        decoding = threading.Thread(
            target=lambda: big_answer.append(
                httpx.post(
                    f"{server.url}/predict",
                    files={"image": ("big.png", big, "image/png")},
                    data={"number": "1"},
                    timeout=30.0,
                ).status_code
            )
        )
        time.sleep(1.0)  # load running
        slow.start()
        decoding.start()
        # Both in flight: the big image has reached the decoding pool (a fixed pause here lost
        # the race on a busy machine, and the image arrived after the signal).
        _wait_for_decoding(server.url)
        load.signalled_at.append(time.monotonic())
        server.process.send_signal(signal.SIGTERM)

        ready = httpx.get(f"{server.url}/health/ready", timeout=5.0)
        assert ready.status_code == 503
        assert ready.json() == {"status": "draining"}
        assert_error(load.post(), 503, "draining")

        status = server.process.wait(DRAIN_DELAY_S + GRACEFUL_TIMEOUT_S + 15)
        exited_after = time.monotonic() - load.signalled_at[0]
        for thread in [*threads, slow, decoding]:
            thread.join(30)
    finally:
        live_server.ensure_stopped(server)

    signalled = load.signalled_at[0]
    in_flight = [s for s in load.sent if s.started < signalled < s.ended]
    later = [s for s in load.sent if s.started > signalled + 0.2]  # surely seen after the signal
    outcomes = Counter(s.outcome for s in load.sent)
    report(
        "sigterm",
        requests=len(load.sent),
        outcomes=dict(outcomes),
        in_flight_at_signal=dict(Counter(s.outcome for s in in_flight)),
        slow_upload=slow_answer,
        decoding=big_answer,
        exit_status=status,
        exited_after_s=round(exited_after, 2),
    )
    assert status == 0, server.log_text()
    # Sent before the signal, still uploading or being decoded after it: finished, not refused.
    assert slow_answer == ["HTTP/1.1 200 OK"], slow_answer
    assert big_answer == [200]
    # Every answer is a prediction or a retryable 503: nothing dropped, reset or failed. A request
    # that the server had not yet read when the signal came gets 503 draining, as a new one does.
    assert set(outcomes) <= {"200", "503 draining"}, outcomes
    assert {s.outcome for s in later} <= {"503 draining"}
    assert DRAIN_DELAY_S <= exited_after < DRAIN_DELAY_S + GRACEFUL_TIMEOUT_S
    assert '"level": "error"' not in server.log_text()
