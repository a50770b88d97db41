"""Where one request's CPU goes: the service under wrk, sampled by py-spy, attributed to steps.

    python -m bench.profile [--connections 1,64] [--duration 10] [--json PATH]

Starts `python -m app` pinned to the last CPU and wrk (bench/post_body.lua, the 509-byte MNIST
upload) pinned to the others, as `make bench` lays them out. py-spy samples every thread that
is on the CPU (`--threads`; it leaves idle threads out, but counts a thread spinning for the
GIL as busy) over the run, as raw collapsed stacks. The script prints, per thread and per step,
the share of samples and the microseconds per request (samples / rate / requests wrk counted).
Steps are recognised by the functions on the stack, innermost first (STEPS); what matches none
is `other`. At one connection the threads' hand-offs (waking, waiting for the GIL) show as busy
time, so its per-request figures overstate CPU; at 64 connections the core is saturated and
the shares are the CPU's. py-spy is a developer's tool, not a dependency: `pip install py-spy`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench import payload
from bench.servers import RunningServer, free_port, server_spec
from bench.wrk import run_wrk

# (step, a substring of a frame "function (file)" that marks it), checked from the innermost
# frame outwards; the first step whose marker is on the stack takes the sample.
STEPS: tuple[tuple[str, str], ...] = (
    ("forward pass", "predict (app/inference.py"),
    ("decode + prepare (model thread)", "prepare_batch (app/imaging.py"),
    ("batch bookkeeping (model thread)", "_forward (app/inference.py"),
    ("multipart parse", "(app/forms.py"),
    ("access log + metrics", "_record (app/middleware.py"),
    ("logging (record made, queued; JSON written on the writer thread)", "(logging/"),
    ("JSON answer", "_json (app/api/routes/predict.py"),
    ("endpoint", "(app/api/routes/predict.py"),
    ("batcher (event loop)", "(app/inference.py"),
    ("request middleware", "(app/middleware.py"),
    ("uvicorn / httptools", "(uvicorn/"),
    ("starlette", "(starlette/"),
    ("asyncio / uvloop", "(asyncio/"),
)


def step_of(stack: str) -> str:
    """The step a collapsed stack ("outer;...;inner") belongs to."""
    frames = stack.split(";")
    for frame in reversed(frames):
        for step, marker in STEPS:
            if marker in frame:
                return step
    return "other"


def thread_of(stack: str) -> str:
    head = stack.split(";", 1)[0]
    for name in ("model", "decode", "MainThread"):
        if name in head:
            return "event loop" if name == "MainThread" else name
    return "other threads"


def attribute(raw: str) -> dict[str, Counter[str]]:
    """Samples per thread and step, from py-spy's raw output ("stack count" lines)."""
    per: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        per.setdefault(thread_of(stack), Counter())[step_of(stack)] += int(count)
    return per


def run(
    connections: int, duration_s: int, model: Path, rate: int, raw_dir: Path | None = None
) -> dict[str, object]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = [cpus[-1]], cpus[:-1] or cpus
    port = free_port()
    spec = server_spec("ours", sys.executable, port, model)
    # the access log is part of what a request costs
    spec = dataclasses.replace(spec, env={**spec.env, "DIGITSUM_LOG_LEVEL": "info"})
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        digit = payload.load_digit(payload.DEFAULT_DATA_DIRS)
        body.write_bytes(payload.single_body(digit.png))
        url = f"http://127.0.0.1:{port}/predict"
        log = Path(tmp) / "server.log"
        with RunningServer(
            spec, port, server_cpus, log, body.read_bytes(), payload.CONTENT_TYPE
        ) as server:
            assert server.process is not None
            run_wrk(url, body, payload.CONTENT_TYPE, connections, 2, client_cpus)  # warm-up
            raw_path = Path(tmp) / "raw.txt"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--threads",
                    "--rate",
                    str(rate),
                    "--duration",
                    str(duration_s),
                    "--format",
                    "raw",
                    "-o",
                    str(raw_path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = run_wrk(url, body, payload.CONTENT_TYPE, connections, duration_s, client_cpus)
            spy.wait(duration_s + 30)
        raw = raw_path.read_text()
        per = attribute(raw)
        if raw_dir is not None:  # py-spy's stacks, for a look below the steps
            raw_dir.mkdir(parents=True, exist_ok=True)
            (raw_dir / f"stacks-{connections}.txt").write_text(raw)
    requests = result.requests
    total = sum(sum(c.values()) for c in per.values())
    samples_per_core_s = rate  # one sample per thread per 1/rate s; a busy core is `rate`/s
    rows = []
    for thread, steps in per.items():
        for step, count in steps.most_common():
            rows.append(
                {
                    "thread": thread,
                    "step": step,
                    "share": count / total,
                    "us_per_request": count / samples_per_core_s / requests * 1e6,
                }
            )
    return {
        "connections": connections,
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "busy_us_per_request": total / samples_per_core_s / requests * 1e6,
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("--connections", default="1,64", help="comma-separated (default: 1,64)")
    p.add_argument("--duration", type=int, default=10, help="seconds of sampling (default: 10)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default: 250)")
    p.add_argument("--model", type=Path, default=Path("models/digitsum.pt"))
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--raw", type=Path, help="also keep py-spy's stacks in this folder")
    args = p.parse_args(argv)
    if not shutil.which("py-spy") or not shutil.which("wrk"):
        p.error("needs py-spy (pip install py-spy) and wrk (apt-get install wrk)")
    results = [
        run(int(c), args.duration, args.model, args.rate, args.raw)
        for c in args.connections.split(",")
    ]
    for res in results:
        print(
            f"\n{res['connections']} connections: {res['requests_per_s']:.0f} req/s, "
            f"p50 {res['p50_ms']:.2f} ms, server busy {res['busy_us_per_request']:.0f} us/request"
        )
        print(f"{'thread':<14}{'step':<40}{'share':>7}{'us/req':>9}")
        for row in res["rows"]:  # type: ignore[attr-defined]
            print(
                f"{row['thread']:<14}{row['step'][:39]:<40}{row['share']:>7.1%}"
                f"{row['us_per_request']:>9.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
