"""The real service as a subprocess on a free loopback port: `python -m app`, exactly as shipped.

Every suite in tests/reliability talks to it over real sockets, because what happens on the wire
(a body that stalls, a closing boundary that never comes, SIGTERM with requests in flight) is
invisible through TestClient. Settings are passed as DIGITSUM_* environment variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import MODEL_PATH, REPO_ROOT

START_TIMEOUT_S = 60.0  # exec to ready on a busy 2-core machine (load, freeze, warm-up)
STOP_TIMEOUT_S = 30.0
SERVED_MODEL = MODEL_PATH


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(port: int, **settings: object) -> dict[str, str]:
    """The environment of one server: ours (DIGITSUM_* of the caller's shell dropped), then
    `settings` as DIGITSUM_<NAME>; a value of None removes the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSUM_")}
    values: dict[str, object] = {
        "model_path": SERVED_MODEL,
        "device": "cpu",
        "host": "127.0.0.1",
        "port": port,
        "log_level": "info",
        "keepalive_s": 5,
    }
    values.update(settings)
    for name, value in values.items():
        if value is not None:
            env[f"DIGITSUM_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class LiveServer:
    """One `python -m app` process; its stderr (JSON log lines) goes to `log_path`."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every log line, parsed; a line that is not one JSON object fails the caller's test."""
        records = []
        for line in self.log_text().splitlines():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def rss_bytes(self) -> int:
        """Resident set size of the server process now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all threads), from /proc:
        unlike wall time, it does not grow while other processes on the machine have the CPU."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Send `sig` and wait for the exit status; kill it if it outlives `timeout_s`."""
        if self.alive():
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise


def uvicorn_command(port: int) -> list[str]:
    """Plain `uvicorn app.main:app`, as people run FastAPI apps, instead of our launcher."""
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]


def launch(
    log_path: Path, port: int | None = None, command: list[str] | None = None, **settings: object
) -> LiveServer:
    """Start `python -m app`, or `command` (not waiting for it); see `start` for the waiting
    version."""
    port = port or free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        command or [sys.executable, "-m", "app"],
        cwd=REPO_ROOT,
        env=server_env(port, **settings),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the child holds its own copy
    return LiveServer(process, port, log_path)


def wait_ready(server: LiveServer, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll /health/ready until 200; fail with the server's log if it exits or never gets there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"server exited {server.process.returncode} before ready:\n{server.log_text()}"
            )
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s:\n{server.log_text()}")


def start(
    log_path: Path, port: int | None = None, command: list[str] | None = None, **settings: object
) -> LiveServer:
    """Start the service with `settings` and wait until it is ready."""
    server = launch(log_path, port, command, **settings)
    try:
        wait_ready(server)
    except BaseException:
        if server.alive():
            server.stop(signal.SIGKILL)
        raise
    return server


def ensure_stopped(server: LiveServer) -> None:
    """Teardown: SIGTERM, then SIGKILL if it hangs; never leaves a process behind."""
    if server.alive():
        with contextlib.suppress(subprocess.TimeoutExpired):  # stop() has killed it
            server.stop(signal.SIGTERM, timeout_s=15)
