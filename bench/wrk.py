"""Running wrk (one run at one connection count) and reading the summary its Lua script prints."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("post_body.lua")
MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk failed to run or printed no summary; the message carries its output."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in ms; `socket_errors` = connect + read + write + timeouts."""

    connections: int
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: int
    status_errors: int

    @property
    def errors(self) -> int:
        return self.socket_errors + self.status_errors

    def to_dict(self) -> dict[str, object]:
        return dict(asdict(self), errors=self.errors)


def wrk_command(
    url: str, connections: int, duration_s: int, client_cpus: list[int] | None, timeout_s: float
) -> list[str]:
    """wrk with one thread per client CPU (never more threads than connections), pinned if asked."""
    threads = max(1, min(len(client_cpus or [0]), connections))
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",  # wrk takes whole seconds only
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    if client_cpus:
        command = ["taskset", "-c", ",".join(map(str, client_cpus)), *command]
    return command


def parse_summary(stdout: str, connections: int) -> WrkResult:
    """The BENCH_JSON line printed by post_body.lua's done() -> WrkResult."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            break
    else:
        raise WrkError(f"wrk printed no {MARKER.strip()} line:\n{stdout}")
    duration_s = raw["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=raw["requests"],
        duration_s=duration_s,
        requests_per_s=raw["requests"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        mean_ms=raw["mean_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        status_errors=raw["status_errors"],
    )


def run_wrk(
    url: str,
    body_path: Path,
    content_type: str,
    connections: int,
    duration_s: int,
    client_cpus: list[int] | None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """POST the body at `body_path` to `url` for `duration_s` seconds over `connections`."""
    command = wrk_command(url, connections, duration_s, client_cpus, timeout_s)
    env = dict(os.environ, BENCH_BODY_FILE=str(body_path), BENCH_CONTENT_TYPE=content_type)
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=duration_s + timeout_s + 30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WrkError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise WrkError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_summary(done.stdout, connections)
