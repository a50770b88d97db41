"""Two builds of the service, side by side: is a change to the request path worth keeping?
(Or ours against one yardstick, `--a-server limit`, paired the same way.)

    python -m bench.ab --a ../digitsum-before --b . [--rounds 5] [--connections 64]
    python -m bench.ab --a-server limit --b .      # ours against the validated FastAPI endpoint

Each side is `python -m app` started from its own source tree (so A and B run their own code
with the same Python environment and the same model), pinned to the server CPU with wrk on the
others, as `make bench` lays them out. Rounds alternate which side goes first, and before each
run the script waits until the machine's one-minute load average is under `--max-load`: the
runs are compared only on a quiet machine. It prints every run and the median of the per-round
ratios B / A (req/s), which is what docs/performance.md quotes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import payload
from bench.servers import SERVER_NAMES, RunningServer, free_port, server_spec
from bench.wrk import run_wrk

# The one-minute load average a run may start at: under 1 on 2 CPUs means nothing but the
# benchmark itself has been running (a run leaves about 0.3 behind it, gone within a minute).
MAX_LOAD = 1.0
# Longest wait for the machine to quieten before a run is refused, in seconds.
QUIET_WAIT_S = 300


def wait_until_quiet(max_load: float) -> float:
    """Block until the one-minute load average is under `max_load`; return it."""
    deadline = time.monotonic() + QUIET_WAIT_S
    while (load := os.getloadavg()[0]) >= max_load:
        if time.monotonic() > deadline:
            raise SystemExit(f"the machine did not quieten: load {load:.2f} >= {max_load}")
        time.sleep(2)
    return load


def measure(
    server: str,
    source: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    body: Path,
    log: Path,
) -> dict[str, float]:
    """One server started in `source` (the code it imports), warmed up, then one wrk run: its
    req/s, p50 and errors."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = [cpus[-1]], cpus[:-1] or cpus
    port = free_port()
    spec = server_spec(server, sys.executable, port, args.model.resolve())
    spec = dataclasses.replace(spec, env={**spec.env, **env}, cwd=source)
    url = f"http://127.0.0.1:{port}/predict"
    with RunningServer(spec, port, server_cpus, log, body.read_bytes(), payload.CONTENT_TYPE):
        run_wrk(url, body, payload.CONTENT_TYPE, args.connections, args.warmup, client_cpus)
        result = run_wrk(
            url, body, payload.CONTENT_TYPE, args.connections, args.duration, client_cpus
        )
    return {
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "errors": result.socket_errors + result.status_errors,
    }


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--a-env/--b-env take KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("--a", type=Path, default=Path("."), help="source tree of A (default: .)")
    p.add_argument("--b", type=Path, default=Path("."), help="source tree of B (default: .)")
    p.add_argument(
        "--a-server",
        default="ours",
        choices=SERVER_NAMES,
        help="which server A is (default: ours; `limit` sets ours against the FastAPI endpoint)",
    )
    p.add_argument("--b-server", default="ours", choices=SERVER_NAMES, help="(default: ours)")
    p.add_argument("--a-env", action="append", default=[], help="KEY=VALUE for A's server")
    p.add_argument("--b-env", action="append", default=[], help="KEY=VALUE for B's server")
    p.add_argument("--model", type=Path, default=Path("models/digitsum.pt"))
    p.add_argument("--rounds", type=int, default=5, help="A/B pairs (default: 5)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default: 64)")
    p.add_argument("--duration", type=int, default=8, help="seconds measured per run (default: 8)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of load discarded (default: 2)")
    p.add_argument("--max-load", type=float, default=MAX_LOAD, help=f"(default: {MAX_LOAD})")
    p.add_argument("--json", type=Path, help="also write every run here")
    args = p.parse_args(argv)
    sides = {
        "A": (args.a_server, args.a.resolve(), parse_env(args.a_env)),
        "B": (args.b_server, args.b.resolve(), parse_env(args.b_env)),
    }
    runs: list[dict[str, object]] = []
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        digit = payload.load_digit(payload.DEFAULT_DATA_DIRS)
        body.write_bytes(payload.single_body(digit.png))
        for round_ in range(1, args.rounds + 1):
            order = ("A", "B") if round_ % 2 else ("B", "A")
            got = {}
            for side in order:
                server, source, env = sides[side]
                load = wait_until_quiet(args.max_load)
                log = Path(tmp) / f"{side}-{round_}.log"
                res = measure(server, source, env, args, body, log)
                got[side] = res
                runs.append({"round": round_, "side": side, "load_before": load, **res})
                print(
                    f"round {round_} {side}: {res['requests_per_s']:8.0f} req/s  "
                    f"p50 {res['p50_ms']:6.2f} ms  errors {res['errors']:.0f}  "
                    f"(load before {load:.2f})",
                    flush=True,
                )
            ratios.append(got["B"]["requests_per_s"] / got["A"]["requests_per_s"])
    print(
        f"B / A per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "a": [args.a_server, str(args.a)],
                    "b": [args.b_server, str(args.b)],
                    "runs": runs,
                    "ratios": ratios,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
