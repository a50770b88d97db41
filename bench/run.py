"""Run the whole benchmark: model-only, then ours and its four yardsticks side by side under wrk.

    make bench                      # == python -m bench
    python -m bench --quick         # ~1 minute smoke run
    python -m bench --help

Each repeat starts every server afresh, one at a time, so drift on a noisy machine spreads over
all of them instead of landing on one. Results go to bench/results/<name>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import payload, report
from bench.servers import (
    DEFAULT_SERVERS,
    SERVER_NAMES,
    RunningServer,
    ServerError,
    check_batch,
    free_port,
    post,
    server_spec,
)
from bench.wrk import WrkError, run_wrk

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "torch",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "python-multipart",
    "pillow",
    "numpy",
    "opencv-python-headless",
)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the service against a bare ASGI app, FastAPI's File()/Form() "
        "endpoint, the usual tutorial implementation and LitServe, in one run.",
    )
    add = parser.add_argument
    add(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated servers to run, of {','.join(SERVER_NAMES)} "
        f"(default: {','.join(DEFAULT_SERVERS)})",
    )
    add(
        "--connections",
        type=int_list,
        default=[1, 16, 64],
        help="comma-separated wrk connection counts for POST /predict (default: 1,16,64)",
    )
    add("--duration", type=int, default=10, help="whole seconds per wrk run (default: 10)")
    add(
        "--warmup",
        type=int,
        default=3,
        help="whole seconds of discarded load before measuring each server, 0 for none "
        "(default: 3)",
    )
    add(
        "--repeats",
        type=int,
        default=3,
        help="runs of every configuration; medians are reported (default: 3)",
    )
    add(
        "--batch-images",
        type=int,
        default=64,
        help="images per POST /predict/batch request; 0 skips the batch run (default: 64)",
    )
    add(
        "--batch-connections",
        type=int_list,
        default=[4],
        help="wrk connections for the batch run (default: 4)",
    )
    add("--batch-sizes", default="1,8,64,256", help="model-only batch sizes (default: 1,8,64,256)")
    add(
        "--model-seconds",
        type=float,
        default=2.0,
        help="model-only timed seconds per variant and batch size (default: 2)",
    )
    add("--no-model-only", action="store_true", help="skip the model-only measurement")
    add(
        "--server-cpus",
        type=int_list,
        default=[1],
        help="CPUs the server is pinned to with taskset (default: 1)",
    )
    add(
        "--client-cpus",
        type=int_list,
        default=[0],
        help="CPUs wrk is pinned to; one wrk thread per CPU (default: 0)",
    )
    add(
        "--model",
        type=Path,
        default=Path("models/digitsum.pt"),
        help="TorchScript model for tutorial, ours and model-only (default: models/digitsum.pt)",
    )
    add(
        "--data-dir",
        type=Path,
        action="append",
        help="where to look for MNIST/raw/t10k-images-idx3-ubyte.gz, repeatable "
        "(default: tests/data, data, ../shared/data; else a digit drawn with Pillow)",
    )
    add("--name", default="latest", help="result file name stem (default: latest)")
    add(
        "--out-dir",
        type=Path,
        default=Path("bench/results"),
        help="where results are written (default: bench/results)",
    )
    add(
        "--quick",
        action="store_true",
        help="smoke mode: 2 s runs, 1 s warm-up, 1 repeat, 0.3 s model-only (overrides those)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats, args.model_seconds = 2, 1, 1, 0.3
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.servers) - set(SERVER_NAMES)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(SERVER_NAMES)}")
    if not args.connections or min(args.connections) < 1:
        parser.error("--connections needs positive integers")
    if args.repeats < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--repeats and --duration must be positive, --warmup not negative")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_cpus(wanted: list[int], role: str) -> list[int] | None:
    """`wanted` if taskset exists and this process may use those CPUs; else None (unpinned)."""
    available = os.sched_getaffinity(0)
    if shutil.which("taskset") is None:
        log(f"warning: taskset not found, {role} runs unpinned")
        return None
    if not set(wanted) <= available:
        log(f"warning: CPUs {wanted} not all available ({sorted(available)}), {role} runs unpinned")
        return None
    return wanted


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": command_output(["wrk", "-v"]),
        "git_commit": command_output(["git", "rev-parse", "--short", "HEAD"])
        + (" (with uncommitted changes)" if dirty else ""),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def run_model_only(
    args: argparse.Namespace, cpus: list[int] | None, *extra: str, batch_sizes: str = ""
) -> dict[str, Any]:
    """bench.model_only in a subprocess pinned like the server, with as many torch threads."""
    threads = len(cpus) if cpus else len(os.sched_getaffinity(0))
    argv = [
        sys.executable,
        "-m",
        "bench.model_only",
        "--model",
        str(args.model),
        "--batch-sizes",
        batch_sizes or args.batch_sizes,
        "--threads",
        str(threads),
        "--seconds",
        str(args.model_seconds),
        *extra,
    ]
    if cpus:
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"model-only run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def time_yardstick(
    args: argparse.Namespace, cpus: list[int] | None, model_only: dict[str, Any]
) -> dict[str, Any]:
    """The batch bar's yardstick timed once more: the same variant and device as the
    start-of-run model-only figure, at the batch route's batch size."""
    reference = report.model_reference(model_only, args.batch_images)
    assert reference is not None
    device = report.served_device(model_only)["device"]
    measured = run_model_only(
        args,
        cpus,
        "--variants",
        reference["variant"],
        "--devices",
        device.split(":")[0],
        batch_sizes=str(args.batch_images),
    )
    row: dict[str, Any] = measured["devices"][-1]["rows"][0]
    log(f"  model-only {row['variant']} x{args.batch_images}: {row['images_per_s']:8.0f} images/s")
    return row


def paired_yardstick(before: dict[str, Any], after: dict[str, Any], repeat: int) -> dict[str, Any]:
    """The yardstick of one repeat's batch run: the mean of the model-only figures timed just
    before and just after it, so that the ratio compares measurements seconds apart rather than
    minutes (this machine's speed drifts by 10-30% within a run)."""
    return {
        **after,
        "repeat": repeat,
        "images_per_s": (before["images_per_s"] + after["images_per_s"]) / 2,
        "images_per_s_before": before["images_per_s"],
        "images_per_s_after": after["images_per_s"],
    }


def measure_server(
    name: str,
    repeat: int,
    args: argparse.Namespace,
    bodies: dict[str, Path],
    server_cpus: list[int] | None,
    client_cpus: list[int] | None,
    workdir: Path,
    yardstick: Callable[[], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    """One server's sweep over connection counts (and its batch run): raw rows, the batch run's
    paired yardstick (timed by `yardstick` just before the batch runs and just after the server
    stops; None without one), plus notes."""
    port = free_port()
    spec = server_spec(name, sys.executable, port, args.model)
    url = f"http://127.0.0.1:{port}/predict"
    single = bodies["single"].read_bytes()
    log_path = workdir / f"{name}-{repeat}.log"
    load_rows: list[dict[str, Any]] = []
    batch_rows: list[dict[str, Any]] = []
    before: dict[str, Any] | None = None
    with RunningServer(spec, port, server_cpus, log_path, single, payload.CONTENT_TYPE):
        if args.warmup > 0:
            run_wrk(
                url,
                bodies["single"],
                payload.CONTENT_TYPE,
                max(args.connections),
                args.warmup,
                client_cpus,
            )
        for conns in args.connections:
            result = run_wrk(
                url, bodies["single"], payload.CONTENT_TYPE, conns, args.duration, client_cpus
            )
            load_rows.append({"server": name, "repeat": repeat, **result.to_dict()})
            log(
                f"  {name:<8} c={conns:<3} {result.requests_per_s:8.0f} req/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                f"errors {result.errors}"
            )
        if spec.has_batch and args.batch_images > 0:
            status, answer = post(
                port,
                "/predict/batch",
                bodies["batch"].read_bytes(),
                payload.CONTENT_TYPE,
                timeout_s=60,
            )
            check_batch(status, answer, args.batch_images, f"{name} POST /predict/batch")
            if args.warmup > 0:
                run_wrk(
                    url + "/batch",
                    bodies["batch"],
                    payload.CONTENT_TYPE,
                    max(args.batch_connections),
                    min(args.warmup, 2),
                    client_cpus,
                )
            before = yardstick() if yardstick is not None else None
            for conns in args.batch_connections:
                result = run_wrk(
                    url + "/batch",
                    bodies["batch"],
                    payload.CONTENT_TYPE,
                    conns,
                    args.duration,
                    client_cpus,
                )
                images = result.requests_per_s * args.batch_images
                batch_rows.append(
                    {"server": name, "repeat": repeat, "images_per_s": images, **result.to_dict()}
                )
                log(
                    f"  {name:<8} batch x{args.batch_images} c={conns:<3} {images:8.0f} images/s  "
                    f"p50 {result.p50_ms:7.1f} ms  errors {result.errors}"
                )
    paired = None
    if yardstick is not None and before is not None and batch_rows:
        paired = paired_yardstick(before, yardstick(), repeat)
    notes = {
        "server": name,
        "repeat": repeat,
        "log_bytes": log_path.stat().st_size,
        "log_tail": log_path.read_text(errors="replace")[-600:],
    }
    return load_rows, batch_rows, paired, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("error: wrk not found; install it (Debian/Ubuntu: apt-get install wrk)")
        return 2
    needs_model = not args.no_model_only or {"tutorial", "ours"} & set(args.servers)
    if needs_model and not args.model.is_file():
        log(f"error: model file {args.model} not found (train and export one, or pass --model)")
        return 2
    server_cpus = resolve_cpus(args.server_cpus, "the server")
    client_cpus = resolve_cpus(args.client_cpus, "wrk")
    digit = payload.load_digit(args.data_dir or payload.DEFAULT_DATA_DIRS)
    result: dict[str, Any] = {
        "name": args.name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "settings": {
            "servers": args.servers,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "batch_images": args.batch_images,
            "batch_connections": args.batch_connections,
            "server_cpus": server_cpus or "unpinned",
            "client_cpus": client_cpus or "unpinned",
            "model": str(args.model),
            "wrk_threads": max(1, len(client_cpus or [0])),
        },
        "servers": {
            name: server_spec(name, "python", 0, args.model).description for name in args.servers
        },
    }
    log(
        f"bench: servers {args.servers}, connections {args.connections}, {args.repeats} x "
        f"{args.duration:g} s; server CPUs {server_cpus or 'unpinned'}, "
        f"wrk CPUs {client_cpus or 'unpinned'}; load average {result['machine']['loadavg_before']}"
    )
    if not args.no_model_only:
        log("model only ...")
        result["model_only"] = run_model_only(args, server_cpus)
    else:
        result["model_only"] = None
    load_rows: list[dict[str, Any]] = []
    batch_rows: list[dict[str, Any]] = []
    server_notes: list[dict[str, Any]] = []
    yardsticks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="digitsum-bench-") as tmp:
        workdir = Path(tmp)
        bodies = {"single": workdir / "single.body", "batch": workdir / "batch.body"}
        bodies["single"].write_bytes(payload.single_body(digit.png))
        bodies["batch"].write_bytes(payload.batch_body(digit.png, max(args.batch_images, 1)))
        result["payload"] = {
            "source": digit.source,
            "png_bytes": len(digit.png),
            "body_bytes": bodies["single"].stat().st_size,
            "batch_body_bytes": bodies["batch"].stat().st_size,
        }
        try:
            for repeat in range(args.repeats):
                log(f"repeat {repeat + 1}/{args.repeats}")
                for name in args.servers:
                    model_only = result["model_only"] if name == "ours" else None
                    yardstick = (
                        functools.partial(time_yardstick, args, server_cpus, model_only)
                        if model_only
                        else None
                    )
                    rows, batch, paired, notes = measure_server(
                        name, repeat, args, bodies, server_cpus, client_cpus, workdir, yardstick
                    )
                    load_rows += rows
                    batch_rows += batch
                    server_notes.append(notes)
                    if paired is not None:
                        yardsticks.append(paired)
        except (ServerError, WrkError) as exc:
            log(f"error: {exc}")
            return 1
    load_summary = report.summarise(load_rows, ("server", "connections"))
    batch_summary = report.summarise(batch_rows, ("server", "connections"))
    result["load"] = {"summary": load_summary, "runs": load_rows}
    result["batch"] = {"summary": batch_summary, "runs": batch_rows, "yardsticks": yardsticks}
    result["ratios"] = report.ratios(load_summary, args.connections, result["model_only"])
    result["bars"] = report.bars(
        load_summary, batch_summary, result["model_only"], args.batch_images, batch_rows, yardsticks
    )
    result["server_logs"] = server_notes
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    paths = report.write_outputs(result, args.out_dir)
    print(report.console_table(result))
    log("wrote " + ", ".join(str(p) for p in paths))
    return 0
