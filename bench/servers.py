"""The servers under test, each started as one server process pinned to the server CPUs.

- bare: bench/bare_app.py, a bare ASGI app that reads the body and answers a fixed JSON
- limit: bench/empty_app.py, the FastAPI endpoint a user would write, File() and Form(ge=0, le=9)
  reading the same form, doing nothing else
- limit-bare: the same without the range check (reported, not barred; not run by default)
- tutorial: bench/tutorial_app.py, the usual per-request implementation
- litserve: bench/litserve_app.py, the same checkpoint behind LitServe with its batching
- ours: `python -m app`, the service exactly as `make serve` starts it
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

# Both baselines run with uvloop + httptools (what the service's launcher uses) and without the
# access log: a baseline gets every advantage, so a bar met against it is not met by accident.
UVICORN_FLAGS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
]
SERVER_NAMES = ("bare", "limit", "limit-bare", "tutorial", "litserve", "ours")
DEFAULT_SERVERS = ("bare", "limit", "tutorial", "litserve", "ours")


class ServerError(RuntimeError):
    """A server did not start, died, or answered the pre-flight request wrongly."""


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server on a port; `has_batch` says whether it serves /predict/batch."""

    name: str
    description: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    has_batch: bool = False
    cwd: Path | None = None  # where it starts (the code it imports); None: this process's


def server_spec(name: str, python: str, port: int, model_path: Path) -> ServerSpec:
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if name == "bare":
        return ServerSpec(
            name,
            "bare ASGI app: reads the body, answers a fixed JSON (bench/bare_app.py)",
            [python, "-m", "uvicorn", "bench.bare_app:app", *host, *UVICORN_FLAGS],
        )
    if name == "litserve":
        return ServerSpec(
            name,
            "LitServe 0.2, batches of up to 64 within 5 ms, 1 torch thread (bench/litserve_app.py)",
            [python, "-m", "bench.litserve_app"],
            env={"BENCH_PORT": str(port), "DIGITSUM_MODEL_PATH": str(model_path)},
        )
    if name in ("limit", "limit-bare"):
        validated = name == "limit"
        return ServerSpec(
            name,
            (
                "FastAPI endpoint with File() and Form(ge=0, le=9), reading the same form, "
                "doing nothing else (bench/empty_app.py)"
                if validated
                else "the same FastAPI endpoint without the range check (bench/empty_app.py)"
            ),
            [
                python,
                "-m",
                "uvicorn",
                "bench.empty_app:" + ("app" if validated else "bare_app"),
                *host,
                *UVICORN_FLAGS,
            ],
            has_batch=True,
        )
    if name == "tutorial":
        return ServerSpec(
            name,
            "plain def endpoint, Pillow, model per request, 1 torch thread (bench/tutorial_app.py)",
            [python, "-m", "uvicorn", "bench.tutorial_app:app", *host, *UVICORN_FLAGS],
            env={"DIGITSUM_MODEL_PATH": str(model_path)},
        )
    if name == "ours":
        return ServerSpec(
            name,
            "the service, `python -m app` with its defaults",
            [python, "-m", "app"],
            env={
                "DIGITSUM_HOST": "127.0.0.1",
                "DIGITSUM_PORT": str(port),
                "DIGITSUM_MODEL_PATH": str(model_path),
            },
            has_batch=True,
        )
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVER_NAMES)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def post(
    port: int, path: str, body: bytes, content_type: str, timeout_s: float = 10.0
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check_prediction(status: int, payload: bytes, where: str) -> None:
    """A 200 whose JSON carries a digit and a sum, as the spec's /predict answer does."""
    if status != 200:
        raise ServerError(f"{where}: HTTP {status}: {payload[:300]!r}")
    answer = json.loads(payload)
    if not isinstance(answer, dict) or not {"digit", "sum"} <= answer.keys():
        raise ServerError(f"{where}: unexpected answer {payload[:300]!r}")


def check_batch(status: int, payload: bytes, count: int, where: str) -> None:
    if status != 200:
        raise ServerError(f"{where}: HTTP {status}: {payload[:300]!r}")
    results = json.loads(payload).get("results")
    if not isinstance(results, list) or len(results) != count:
        raise ServerError(f"{where}: expected {count} results, got {payload[:300]!r}")
    failed = [r for r in results if r.get("error") is not None or r.get("prediction") is None]
    if failed:
        raise ServerError(f"{where}: {len(failed)} of {count} items failed: {failed[0]}")


class RunningServer:
    """Context manager: start `spec` under taskset, wait until POST /predict answers 200, stop it.

    stdout/stderr go to `log_path`; a server that dies or never answers raises ServerError with
    the log's tail.
    """

    def __init__(
        self,
        spec: ServerSpec,
        port: int,
        cpus: list[int] | None,
        log_path: Path,
        probe_body: bytes,
        content_type: str,
        startup_timeout_s: float = 90.0,
    ) -> None:
        self.spec, self.port, self.cpus, self.log_path = spec, port, cpus, log_path
        self.probe_body, self.content_type = probe_body, content_type
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunningServer:
        argv = self.spec.argv
        if self.cpus:
            argv = ["taskset", "-c", ",".join(map(str, self.cpus)), *argv]
        with self.log_path.open("wb") as log:
            # Its own process group, stopped whole: LitServe forks its HTTP and inference
            # workers, which outlive its main process and would go on taking CPU from the
            # servers measured after it.
            self.process = subprocess.Popen(
                argv,
                env=dict(os.environ, **self.spec.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.spec.cwd,
            )
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _wait_until_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.spec.name} exited with {self.process.returncode} during start-up:\n"
                    f"{self.log_tail()}"
                )
            try:
                status, payload = post(self.port, "/predict", self.probe_body, self.content_type)
            except OSError as exc:
                last = str(exc)
            else:
                if status == 200:
                    check_prediction(status, payload, f"{self.spec.name} POST /predict")
                    return
                last = f"HTTP {status}: {payload[:200]!r}"
            time.sleep(0.2)
        raise ServerError(
            f"{self.spec.name} did not answer POST /predict with 200 within "
            f"{self.startup_timeout_s:g} s ({last}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server's process group (graceful), SIGKILL after 30 s; then SIGKILL
        to whatever of the group is left (workers a server forked and did not stop). Only ever
        the group this RunningServer started."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):  # nothing of the group is left
            os.killpg(self.process.pid, sig)
