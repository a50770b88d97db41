"""The GPU check's stages: each runs with its own timeout, and every one runs whatever another did.

    python3 scripts/gpu_check.py --out "$OUT" --data-dir .mnist    # scripts/gpu_check.sh calls it

Standard library only (it must report even when torch or the service's packages fail to import).
Each stage is one command; its output is echoed as it comes (scripts/gpu_check.sh tees it all to
$OUT/gpu_check.log) and read for its figures. A CUDA stage on a machine without CUDA is SKIP with
the reason, and a tiny CPU stand-in of the same command runs in its place where one is defined,
so a rehearsal here (make gpu-rehearsal) runs the same harness. The whole run keeps inside
--budget seconds: a stage gets the lesser of its own timeout and what is left, and a stage that
cannot get MIN_STAGE_S is SKIP (out of time). It ends with one table, PASS/FAIL/SKIP per stage,
then the figures, and writes them to $OUT/gpu_check.json. Exit status 1 when a stage failed.
docs/gpu-check.md says what each stage does and what its figures mean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PY = sys.executable
MODEL_ONLY_BATCHES = "1,2,4,8,16,32,64,128,256,512,1024"
# A checkpoint's metric agrees with its card within this (2 images of 10,000 for the digit,
# 20 pairs of 100,000 for the sum): the card was scored on one device, and near-ties may fall
# the other way under another device's order of summation.
CARD_TOLERANCE = 2e-4
MIN_STAGE_S = 10.0
KILL_GRACE_S = 5.0
METRICS = ("digit_accuracy", "sum_accuracy", "consistency")

Figures = dict[str, Any]


@dataclass
class Context:
    """What every stage may need: where things are, and whether CUDA is here."""

    out: Path
    work: Path
    data_dir: Path
    cuda: bool = False
    gpu: str = ""
    timeout_scale: float = 1.0  # the rehearsal's CPU is slower and shared: it scales them up


@dataclass
class Stage:
    """One command. `figures` reads its output (and files it wrote) into figures, and may
    raise StageFailed to fail a stage whose command exited 0."""

    name: str
    what: str
    argv: list[str]
    timeout_s: float
    needs_cuda: bool = False
    stands_in_for: str = ""  # a CPU stand-in: runs only where CUDA is absent
    env: dict[str, str] = field(default_factory=dict)
    figures: Callable[[str, Context], Figures] | None = None
    needs_file: Path | None = None  # written by an earlier stage: SKIP without it


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    note: str = ""
    figures: Figures = field(default_factory=dict)


class StageFailed(Exception):
    """The command ran, but what it printed or wrote says the stage failed."""


def run_command(argv: list[str], timeout_s: float, env: dict[str, str]) -> tuple[int | None, str]:
    """Run argv in its own process group, echoing its output; (exit status, output). On timeout
    the group gets SIGINT (so Python's finally blocks stop the servers it started), then SIGTERM,
    then SIGKILL; the status is then None."""
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        return 127, f"cannot start {argv[0]}: {exc}\n"

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status: int | None
    try:
        status = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        status = None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=KILL_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                continue
    with contextlib.suppress(ProcessLookupError):  # what the stage left behind, if anything
        os.killpg(process.pid, signal.SIGKILL)
    reader.join(timeout=KILL_GRACE_S)
    if process.stdout is not None:
        process.stdout.close()
    return status, "".join(lines)


def run_stage(stage: Stage, ctx: Context, deadline: float) -> Result | None:
    """One stage's result; None for a stand-in where CUDA is present (it has nothing to do)."""
    if stage.stands_in_for and ctx.cuda:
        return None
    if stage.needs_cuda and not ctx.cuda:
        return Result(stage.name, "SKIP", 0.0, "no CUDA")
    if stage.needs_file is not None and not stage.needs_file.is_file():
        return Result(stage.name, "SKIP", 0.0, f"no {stage.needs_file.name} (an earlier stage)")
    budget = min(stage.timeout_s * ctx.timeout_scale, deadline - time.monotonic())
    if budget < MIN_STAGE_S:
        return Result(stage.name, "SKIP", 0.0, f"out of time ({max(budget, 0):.0f} s left)")
    print(f"\n== {stage.name}: {stage.what}  (timeout {budget:.0f} s)", flush=True)
    print("$ " + " ".join(stage.argv), flush=True)
    started = time.monotonic()
    status, output = run_command(stage.argv, budget, stage.env)
    seconds = time.monotonic() - started
    note = "" if status == 0 else f"timed out after {budget:.0f} s" if status is None else ""
    if status not in (0, None):
        note = f"exit {status}: {last_line(output)}"
    figures: Figures = {}
    verdict = "PASS" if status == 0 else "FAIL"
    if stage.figures is not None:
        try:
            figures = stage.figures("\n".join(output.splitlines()), ctx)  # \r ends lines too
        except StageFailed as exc:
            verdict, note = "FAIL", "; ".join(filter(None, [note, str(exc)]))
        except Exception as exc:  # a figure we could not read fails the stage, not the run
            verdict = "FAIL"
            note = "; ".join(filter(None, [note, f"figures unreadable: {type(exc).__name__}"]))
    if stage.stands_in_for:
        note = "; ".join(filter(None, [f"CPU stand-in for {stage.stands_in_for}", note]))
    return Result(stage.name, verdict, seconds, note, figures)


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


# --- figures: read from what each command printed or wrote ------------------------------------

EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s.*?\s([\d.]+)s\s*$", re.M)
METRIC_LINE = re.compile(r"^(digit accuracy|sum accuracy|consistency)\s+([\d.]+)%", re.M)


def training_figures(output: str, ctx: Context) -> Figures:
    """Epochs done and their seconds, from the trainer's epoch lines; its card when exported."""
    seconds = [float(m.group(3)) for m in EPOCH_LINE.finditer(output)]
    planned = [int(m.group(2)) for m in EPOCH_LINE.finditer(output)]
    figures: Figures = {
        "epochs_done": len(seconds),
        "epochs_planned": planned[-1] if planned else None,
        "epoch_seconds": seconds,
        "median_epoch_s": sorted(seconds)[len(seconds) // 2] if seconds else None,
        "train_s": round(sum(seconds), 1),
    }
    card_path = ctx.work / "model" / "digitsum.json"
    if not card_path.is_file():
        raise StageFailed(f"no export after {len(seconds)} epoch(s)")
    card = json.loads(card_path.read_text())
    figures["card_metrics"] = {k: card["metrics"][k] for k in METRICS if k in card["metrics"]}
    figures["device"] = card.get("training", {}).get("device")
    return figures


def evaluation_figures(checkpoint: Path) -> Callable[[str, Context], Figures]:
    """The evaluation's metrics against the card beside the checkpoint (digitsum.json)."""

    def read(output: str, ctx: Context) -> Figures:
        names = {"digit accuracy": "digit_accuracy", "sum accuracy": "sum_accuracy"}
        measured = {
            names.get(m.group(1), m.group(1)): float(m.group(2)) / 100
            for m in METRIC_LINE.finditer(output)
        }
        if not measured:
            raise StageFailed("no metrics in the output")
        card = json.loads(checkpoint.with_suffix(".json").read_text())["metrics"]
        figures: Figures = {"measured": measured, "card": {k: card.get(k) for k in measured}}
        if card.get("images") != 10_000:  # a smoke training's card: scored on a subset
            figures["compared"] = f"no: the card scored {card.get('images')} images"
            return figures
        off = {k: v - card[k] for k, v in measured.items() if k in card}
        figures["compared"] = "yes"
        worst = max(off, key=lambda k: abs(off[k]))
        if abs(off[worst]) > CARD_TOLERANCE:
            raise StageFailed(f"{worst} {measured[worst]:.4%} vs card {card[worst]:.4%}")
        return figures

    return read


def serving_figures(name: str) -> Callable[[str, Context], Figures]:
    """req/s and p50 per connection count, and the batch route's images/s, from bench's JSON."""

    def read(output: str, ctx: Context) -> Figures:
        path = ctx.work / "bench" / f"{name}.json"
        if not path.is_file():
            raise StageFailed("the benchmark wrote no results")
        result = json.loads(path.read_text())
        figures: Figures = {
            f"c{row['connections']}": {
                "req_per_s": round(row["requests_per_s"]),
                "p50_ms": round(row["p50_ms"], 2),
                "errors": row["errors"],
            }
            for row in result["load"]["summary"]
            if row["server"] == "ours"
        }
        for row in result["batch"]["summary"]:
            figures[f"batch_x{result['settings']['batch_images']}_c{row['connections']}"] = {
                "images_per_s": round(row["images_per_s"]),
                "p50_ms": round(row["p50_ms"], 1),
                "errors": row["errors"],
            }
        errors = sum(v["errors"] for v in figures.values())
        if errors:
            raise StageFailed(f"{errors} failed requests")
        for suffix in (".json", ".md"):
            shutil.copy(path.with_suffix(suffix), ctx.out / f"bench-{name}{suffix}")
        return figures

    return read


def model_only_figures(output: str, ctx: Context) -> Figures:
    """images/s per variant and batch size, and what could not be timed."""
    result = json.loads(output.strip().splitlines()[-1])
    figures: Figures = {"cuda_fuser": result.get("cuda_fuser")}
    for device in result["devices"]:
        table: dict[str, dict[int, int]] = {}
        for row in device["rows"]:
            table.setdefault(row["variant"], {})[row["batch_size"]] = round(row["images_per_s"])
        figures[device["device"]] = {
            "images_per_s": table,
            "skipped": device["skipped"],
            "max_abs_diff_vs_torchscript": device["max_abs_diff_vs_torchscript"],
        }
    return figures


DIFFER_LINE = re.compile(r"^(CUDA fp32 vs CPU|bf16|fp16): (\d+)", re.M)
PYTEST_LINE = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s", re.M)


def pytest_figures(output: str, ctx: Context) -> Figures:
    """pytest's closing counts, and the answers that changed with device and precision."""
    figures: Figures = {m.group(1): int(m.group(2)) for m in DIFFER_LINE.finditer(output)}
    closing = PYTEST_LINE.findall(output)
    figures["pytest"] = closing[-1] if closing else "no summary"
    return figures


def json_line_figures(output: str, ctx: Context) -> Figures:
    """The last JSON object the command printed on a line of its own."""
    line = next(x for x in reversed(output.splitlines()) if x.startswith("{"))
    figures: Figures = json.loads(line)
    return figures


def environment_figures(output: str, ctx: Context) -> Figures:
    """The torch probe's versions; it decides whether the CUDA stages run."""
    figures = json_line_figures(output, ctx)
    ctx.cuda, ctx.gpu = bool(figures.get("cuda")), str(figures.get("gpu") or "")
    return figures


# --- the stages, in order of what matters most if time runs short -----------------------------

TORCH_PROBE = (
    "import json, sys, torch; cuda = torch.cuda.is_available(); "
    "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__, "
    "'cuda': cuda, 'cuda_version': torch.version.cuda, "
    "'gpu': torch.cuda.get_device_name() if cuda else None, "
    "'gpus': torch.cuda.device_count() if cuda else 0}))"
)
IMPORTS = (
    "import json, numpy, PIL, cv2, fastapi, pydantic, starlette, uvicorn; "
    "import app.main, training, training.train, training.evaluate, bench.run, tests.conftest; "
    "print(json.dumps({'numpy': numpy.__version__, 'pillow': PIL.__version__, "
    "'opencv': cv2.__version__, 'fastapi': fastapi.__version__, "
    "'starlette': starlette.__version__, 'pydantic': pydantic.__version__}))"
)


def stages(ctx: Context) -> list[Stage]:
    data, work = str(ctx.data_dir), ctx.work
    trained = work / "model" / "digitsum.pt"
    shipped = Path("models/digitsum.pt")
    train = [
        PY,
        "-m",
        "training",
        "--data-dir",
        data,
        "--no-download",
        "--out",
        str(work / "model"),
    ]
    train += ["--state", str(work / "train_state.pt")]
    bench = [PY, "-m", "bench", "--servers", "ours", "--no-model-only", "--repeats", "1"]
    bench += ["--out-dir", str(work / "bench"), "--batch-images", "64", "--batch-connections", "4"]
    nproc = os.cpu_count() or 1
    server_cpus = ",".join(map(str, range(max(1, nproc // 2))))
    client_cpus = ",".join(map(str, range(max(1, nproc // 2), max(2, nproc * 3 // 4))))
    evaluate = [PY, "-m", "training.evaluate"]
    model_only = [PY, "-m", "bench.model_only", "--threads", str(nproc)]
    quiet = {"TQDM_MININTERVAL": "30"}  # progress bars: a line per 30 s in the log, not per step
    return [
        Stage(
            "torch",
            "torch, and whether CUDA is here",
            [PY, "-c", TORCH_PROBE],
            60,
            figures=environment_figures,
        ),
        Stage(
            "imports",
            "the carried packages import the service, the trainer and the tests",
            [PY, "-c", IMPORTS],
            60,
            figures=json_line_figures,
        ),
        Stage(
            "train-cuda",
            "training on CUDA, the trainer's default schedule (bf16 autocast), then the export",
            [*train, "--device", "cuda"],
            170,
            needs_cuda=True,
            env=quiet,
            figures=training_figures,
        ),
        Stage(
            "train-cpu-smoke",
            "a smoke training on the CPU and its export",
            [*train, "--device", "cpu", "--smoke", "--epochs", "1"],
            120,
            stands_in_for="train-cuda",
            env=quiet,
            figures=training_figures,
        ),
        Stage(
            "eval-export-cuda",
            "the new export scored on CUDA against its card",
            [*evaluate, str(trained), "--data-dir", data, "--device", "cuda"],
            40,
            needs_cuda=True,
            figures=evaluation_figures(trained),
            needs_file=trained,
        ),
        Stage(
            "eval-export-cpu",
            "the new export scored on the CPU against its card",
            [*evaluate, str(trained), "--data-dir", data, "--device", "cpu"],
            60,
            figures=evaluation_figures(trained),
            needs_file=trained,
        ),
        Stage(
            "serve-cuda",
            "the service on the GPU under wrk: 1 and 64 connections, batch x64",
            [
                *bench,
                "--name",
                "gpu",
                "--connections",
                "1,64",
                "--duration",
                "5",
                "--warmup",
                "2",
                "--server-cpus",
                server_cpus,
                "--client-cpus",
                client_cpus,
            ],
            90,
            needs_cuda=True,
            env={"DIGITSUM_DEVICE": "cuda"},
            figures=serving_figures("gpu"),
        ),
        Stage(
            "serve-cpu-smoke",
            "the service on the CPU under wrk, 1 s runs",
            [
                *bench,
                "--name",
                "cpu-smoke",
                "--connections",
                "1,4",
                "--duration",
                "1",
                "--warmup",
                "1",
                "--batch-images",
                "8",
                "--server-cpus",
                "0",
                "--client-cpus",
                "1" if nproc > 1 else "0",
            ],
            90,
            stands_in_for="serve-cuda",
            env={"DIGITSUM_DEVICE": "cpu"},
            figures=serving_figures("cpu-smoke"),
        ),
        Stage(
            "tests-cuda",
            "tests/app/test_gpu.py: CPU vs CUDA answers, bf16/fp16, the service",
            [
                PY,
                "-m",
                "pytest",
                "-q",
                "-s",
                "-p",
                "no:cacheprovider",
                "-p",
                "pytest_timeout",  # pyproject's `timeout`; the machine's own plugins stay off
                "tests/app/test_gpu.py",
                "tests/app/test_devices.py",
            ],
            120,
            env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
            figures=pytest_figures,
        ),
        Stage(
            "eval-shipped-cuda",
            "the shipped checkpoint scored on CUDA against its card",
            [*evaluate, str(shipped), "--data-dir", data, "--device", "cuda"],
            40,
            needs_cuda=True,
            figures=evaluation_figures(shipped),
        ),
        Stage(
            "eval-shipped-cpu",
            "the shipped checkpoint scored on the CPU against its card",
            [*evaluate, str(shipped), "--data-dir", data, "--device", "cpu"],
            60,
            figures=evaluation_figures(shipped),
        ),
        Stage(
            "model-only-cuda",
            "images/s of the model alone on CUDA, batch 1..1024 (fuser off)",
            [
                *model_only,
                "--devices",
                "cuda",
                "--batch-sizes",
                MODEL_ONLY_BATCHES,
                "--seconds",
                "0.3",
                "--variants",
                "torchscript,frozen,optimized",
            ],
            60,
            needs_cuda=True,
            figures=model_only_figures,
        ),
        Stage(
            "model-only-cpu-smoke",
            "the model-only harness on the CPU, batches 1 and 64",
            [
                *model_only,
                "--devices",
                "cpu",
                "--batch-sizes",
                "1,64",
                "--seconds",
                "0.2",
                "--variants",
                "frozen,optimized",
            ],
            60,
            stands_in_for="model-only-cuda",
            figures=model_only_figures,
        ),
        Stage(
            "fuser-on-cuda",
            "the served (frozen) model with TorchScript's GPU fuser on",
            [
                *model_only,
                "--devices",
                "cuda",
                "--batch-sizes",
                "1,64,1024",
                "--seconds",
                "0.3",
                "--variants",
                "frozen",
                "--cuda-fuser",
                "on",
            ],
            40,
            needs_cuda=True,
            figures=model_only_figures,
        ),
    ]


# --- the report --------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    """The stage table: one line per stage, PASS/FAIL/SKIP, seconds and why."""
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'stage':<{width}}  result  seconds  note", "-" * (width + 40)]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.status:<6}  {r.seconds:7.1f}  {r.note}".rstrip())
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
    return "\n".join(lines)


def _pct(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    return " / ".join(
        f"{metrics[k]:.3%}" if metrics.get(k) is not None else "?" for k in METRICS if k in metrics
    )


def figures_report(results: list[Result], ctx: Context) -> str:
    """The figures that matter, one line each, from the stages that produced them."""
    by = {r.name: r for r in results}
    lines = [f"GPU: {ctx.gpu or 'none (no CUDA here)'}"]
    for name in ("train-cuda", "train-cpu-smoke"):
        f = by.get(name, Result(name, "SKIP", 0)).figures
        if f:
            lines.append(
                f"{name}: {f['epochs_done']}/{f['epochs_planned']} epochs, median "
                f"{f['median_epoch_s']} s/epoch, {f['train_s']} s training; "
                f"card (digit / sum / consistency) {_pct(f.get('card_metrics'))}"
            )
    for name in ("eval-export-cuda", "eval-export-cpu", "eval-shipped-cuda", "eval-shipped-cpu"):
        f = by.get(name, Result(name, "SKIP", 0)).figures
        if f:
            lines.append(
                f"{name}: {_pct(f['measured'])} vs card {_pct(f['card'])} "
                f"(compared: {f['compared']})"
            )
    for name in ("serve-cuda", "serve-cpu-smoke"):
        f = by.get(name, Result(name, "SKIP", 0)).figures
        if f:
            parts = []
            for key, row in f.items():
                if "req_per_s" in row:
                    parts.append(f"{key} {row['req_per_s']} req/s p50 {row['p50_ms']} ms")
                else:
                    parts.append(f"{key} {row['images_per_s']} images/s")
            lines.append(f"{name}: " + "; ".join(parts))
    for name in ("model-only-cuda", "fuser-on-cuda", "model-only-cpu-smoke"):
        f = by.get(name, Result(name, "SKIP", 0)).figures
        for device, d in f.items():
            if not isinstance(d, dict):
                continue
            for variant, rates in d["images_per_s"].items():
                rates_text = ", ".join(f"{b}: {r}" for b, r in rates.items())
                lines.append(f"{name} {device} {variant} images/s by batch: {rates_text}")
            if d["skipped"]:
                lines.append(f"{name} {device} not timed: {d['skipped']}")
    f = by.get("tests-cuda", Result("tests-cuda", "SKIP", 0)).figures
    if f:
        changed = [f"{k}: {f[k]}" for k in ("CUDA fp32 vs CPU", "bf16", "fp16") if k in f]
        lines.append(
            "answers changed of 200,000 (reported, not required to be 0): "
            + (", ".join(changed) if changed else "not measured (no CUDA)")
            + f"; pytest {f['pytest']}"
        )
    lines.append("DDP/NCCL: not exercised (one GPU); gloo DDP on the CPU is in the test suite")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the results go")
    parser.add_argument("--work", type=Path, required=True, help="scratch space (not brought back)")
    parser.add_argument("--data-dir", type=Path, required=True, help="MNIST's raw files are here")
    parser.add_argument("--budget", type=float, default=330, help="seconds for all stages")
    parser.add_argument("--only", default="", help="comma-separated stage names (default: all)")
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply every stage's timeout by this"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.out, args.work, args.data_dir, timeout_scale=args.timeout_scale)
    only = {s for s in args.only.split(",") if s}
    results: list[Result] = []
    for stage in stages(ctx):
        if only and stage.name not in only:
            continue
        result = run_stage(stage, ctx, deadline)
        if result is not None:
            results.append(result)
            print(f"-- {result.name}: {result.status} {result.note}".rstrip(), flush=True)
    for name in ("digitsum.pt", "digitsum.json"):  # the CUDA training's export, if there is one
        if ctx.cuda and (ctx.work / "model" / name).is_file():
            shutil.copy(ctx.work / "model" / name, ctx.out / name)
    report = figures_report(results, ctx)
    summary = {
        "wall_s": round(time.monotonic() - started, 1),
        "stages": [r.__dict__ for r in results],
    }
    (ctx.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n== summary ({summary['wall_s']:.0f} s)\n{table(results)}\n\n{report}", flush=True)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
