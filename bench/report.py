"""Raw runs -> medians, ratios and bar verdicts, written as JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LABELS = {
    "bare": "bare ASGI (fixed JSON)",
    "limit": "FastAPI File()/Form(ge=0, le=9)",
    "limit-bare": "FastAPI, no range check",
    "tutorial": "tutorial",
    "litserve": "LitServe (batching)",
    "ours": "ours",
}
# The yardsticks, in the order the ratio tables show ours against them.
YARDSTICKS = ("bare", "limit", "limit-bare", "tutorial", "litserve")

# The bars, measured on the same machine in the same run; `bare` is reported, not barred.
BAR_LIMIT_RATIO = 1.2  # ours / limit req/s at 64 connections (issue 27)
BAR_LIMIT_FLOOR = 0.8  # the same ratio's floor since issue 4, which must keep holding
BAR_TUTORIAL_RATIO = 3.0  # ours / tutorial req/s at 64 connections
BAR_LITSERVE_RATIO = 5.0  # ours / litserve req/s at 64 connections
BAR_P50_DELTA_MS = 1.0  # ours p50 - limit p50 at 1 connection
BAR_BATCH_RATIO = 0.6  # /predict/batch images/s over model-only images/s at the same batch size
BAR_CONNECTIONS = 64
EXPORTED_VARIANTS = ("torchscript", "frozen", "optimized", "onnxruntime")


def summarise(runs: Iterable[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Median req/s and latencies over repeats of each (server, connections); errors are summed."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    summary = []
    for group_key, group in groups.items():
        row: dict[str, Any] = dict(zip(keys, group_key, strict=True))
        row["repeats"] = len(group)
        for field in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            row[field] = statistics.median(r[field] for r in group)
        row["requests_per_s_min"] = min(r["requests_per_s"] for r in group)
        row["requests_per_s_max"] = max(r["requests_per_s"] for r in group)
        if "images_per_s" in group[0]:
            row["images_per_s"] = statistics.median(r["images_per_s"] for r in group)
        for field in ("requests", "socket_errors", "status_errors", "errors"):
            row[field] = sum(r[field] for r in group)
        summary.append(row)
    return summary


def find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


# The batch size of the model-only figure in the physical ceiling below.
CEILING_BATCH = 64


def ceiling(
    load: list[dict[str, Any]], model_only: dict[str, Any] | None, conns: int
) -> float | None:
    """The limit with our model, in req/s: one request of the bare ASGI app plus one image of
    the model alone at batch CEILING_BATCH, one after the other on the same core. No service
    that parses a request and runs this model on it can pass it."""
    bare = find(load, server="bare", connections=conns)
    model = model_reference(model_only, CEILING_BATCH)
    if not bare or not model:
        return None
    return 1.0 / (1.0 / bare["requests_per_s"] + 1.0 / model["images_per_s"])


def ratios(
    load: list[dict[str, Any]], connections: list[int], model_only: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """ours / each yardstick in req/s (`ours_over_<name>`), ours' p50 minus the limit's, and
    ours over the ceiling (`ours_over_ceiling`), at each connection count."""
    out = []
    for conns in connections:
        ours = find(load, server="ours", connections=conns)
        row: dict[str, Any] = {"connections": conns}
        top = ceiling(load, model_only, conns)
        if ours and top:
            row["ceiling_requests_per_s"] = top
            row["ours_over_ceiling"] = ours["requests_per_s"] / top
        for name in YARDSTICKS:
            other = find(load, server=name, connections=conns)
            if ours and other:
                row[f"ours_over_{name}"] = ours["requests_per_s"] / other["requests_per_s"]
                if name == "limit":
                    row["p50_ours_minus_limit_ms"] = ours["p50_ms"] - other["p50_ms"]
        out.append(row)
    return out


def served_device(model_only: dict[str, Any]) -> dict[str, Any]:
    """The model-only results of the device the service runs on: CUDA when this run measured
    one (the service's default, DIGITSUM_DEVICE=auto, takes it), else the CPU."""
    device: dict[str, Any] = model_only["devices"][-1]
    return device


def model_reference(model_only: dict[str, Any] | None, batch: int) -> dict[str, Any] | None:
    """The fastest exported variant's images/s at `batch` on the service's device (the batch
    bar's yardstick).

    The fastest, not the one the service happens to run: a service that runs a slower form of
    the model than the file allows carries the difference as overhead.
    """
    if not model_only:
        return None
    rows = [
        r
        for r in served_device(model_only)["rows"]
        if r["batch_size"] == batch and r["variant"] in EXPORTED_VARIANTS
    ]
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def paired_batch_ratios(
    batch_runs: list[dict[str, Any]], yardsticks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per repeat: ours' best batch images/s over the model-only figure timed around it."""
    out = []
    for yardstick in yardsticks:
        runs = [
            r for r in batch_runs if r["server"] == "ours" and r["repeat"] == yardstick["repeat"]
        ]
        if runs:
            best = max(runs, key=lambda r: r["images_per_s"])
            out.append(
                {
                    "repeat": yardstick["repeat"],
                    "connections": best["connections"],
                    "images_per_s": best["images_per_s"],
                    "model_only_images_per_s": yardstick["images_per_s"],
                    "ratio": best["images_per_s"] / yardstick["images_per_s"],
                }
            )
    return out


def bars(
    load: list[dict[str, Any]],
    batch: list[dict[str, Any]],
    model_only: dict[str, Any] | None,
    batch_images: int,
    batch_runs: list[dict[str, Any]] | None = None,
    yardsticks: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The issue's bars; `holds` is None where this run did not measure what a bar needs."""
    out: list[dict[str, Any]] = []
    ours_64 = find(load, server="ours", connections=BAR_CONNECTIONS)

    def bar(name: str, holds: bool | None, detail: str) -> None:
        out.append({"bar": name, "holds": holds, "detail": detail})

    for yardstick, least in (
        ("limit", BAR_LIMIT_FLOOR),
        ("limit", BAR_LIMIT_RATIO),
        ("tutorial", BAR_TUTORIAL_RATIO),
        ("litserve", BAR_LITSERVE_RATIO),
    ):
        name = f"{BAR_CONNECTIONS} connections: ours >= {least:g}x {yardstick} req/s"
        other = find(load, server=yardstick, connections=BAR_CONNECTIONS)
        if ours_64 and other:
            r = ours_64["requests_per_s"] / other["requests_per_s"]
            detail = f"{ours_64['requests_per_s']:.0f} / {other['requests_per_s']:.0f} = {r:.2f}x"
            bar(name, r >= least, detail)
        else:
            bar(name, None, "not measured")
    name = "ours: zero errors (every connection count, every repeat, batch runs too)"
    ours_rows = [r for r in load + batch if r["server"] == "ours"]
    if ours_rows:
        errors = sum(r["errors"] for r in ours_rows)
        requests = sum(r["requests"] for r in ours_rows)
        bar(name, errors == 0, f"{errors} errors in {requests} requests")
    else:
        bar(name, None, "not measured")
    name = f"1 connection: ours p50 within {BAR_P50_DELTA_MS:g} ms of limit p50"
    ours_1 = find(load, server="ours", connections=1)
    limit_1 = find(load, server="limit", connections=1)
    if ours_1 and limit_1:
        delta = ours_1["p50_ms"] - limit_1["p50_ms"]
        bar(
            name,
            delta <= BAR_P50_DELTA_MS,
            f"{ours_1['p50_ms']:.3f} ms - {limit_1['p50_ms']:.3f} ms = {delta:+.3f} ms",
        )
    else:
        bar(name, None, "not measured")
    name = (
        f"/predict/batch x{batch_images}: >= {BAR_BATCH_RATIO}x model-only images/s "
        f"at batch {batch_images}"
    )
    ours_batch = [r for r in batch if r["server"] == "ours"]
    reference = model_reference(model_only, batch_images)
    if ours_batch and reference:
        best = max(ours_batch, key=lambda r: r["images_per_s"])
        images = best["images_per_s"]
        r = images / reference["images_per_s"]
        others = [
            f"{row['variant']} {images / row['images_per_s']:.2f}x"
            for row in served_device(model_only)["rows"]  # type: ignore[arg-type]
            if row["batch_size"] == batch_images and row["variant"] != reference["variant"]
        ]
        detail = (
            f"{images:.0f} / {reference['images_per_s']:.0f} ({reference['variant']}) = {r:.2f}x"
            f" at {best['connections']} connections (against " + ", ".join(others) + ")"
        )
        paired = paired_batch_ratios(batch_runs or [], yardsticks or [])
        if paired:
            # The verdict: the median of the per-repeat ratios, each against a yardstick taken
            # seconds after its batch run; the start-of-run ratio above stays in the detail.
            r = statistics.median(p["ratio"] for p in paired)
            detail = (
                f"median of {len(paired)} paired repeats {r:.2f}x ("
                + ", ".join(
                    f"{p['images_per_s']:.0f} / {p['model_only_images_per_s']:.0f}" for p in paired
                )
                + f"); against the start-of-run model-only: {detail}"
            )
        bar(name, r >= BAR_BATCH_RATIO, detail)
    else:
        bar(name, None, "not measured")
    return out


def verdict(holds: bool | None) -> str:
    return {True: "holds", False: "MISSED", None: "not measured"}[holds]


def markdown(result: dict[str, Any]) -> str:
    """The whole result as Markdown tables (what docs and the README quote)."""
    lines = [f"# Benchmark `{result['name']}`", ""]
    machine = result["machine"]
    settings = result["settings"]
    lines += [
        f"- Machine: {machine['cpu_model']}, {machine['cpus']} CPUs, {machine['platform']}",
        f"- Layout: server pinned to CPUs {result['settings']['server_cpus']}, "
        f"wrk to CPUs {result['settings']['client_cpus']}",
        f"- Each point: median of {settings['repeats']} runs of {settings['duration_s']} s "
        f"(after {settings['warmup_s']} s of warm-up); "
        "errors summed over the runs",
        f"- Body: {result['payload']['body_bytes']} bytes, a {result['payload']['png_bytes']}-byte "
        f"28x28 PNG from {result['payload']['source']}",
        f"- Command: `{result['command']}`",
        f"- Commit: {machine['git_commit']}; {result['created']}",
        f"- Load average before / after: {machine['loadavg_before']} / {machine['loadavg_after']}",
        "",
        "## POST /predict",
        "",
        "| server | connections | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["load"]["summary"]:
        lines.append(
            f"| {row['server']} | {row['connections']} | {row['requests_per_s']:.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
        )
    if result["ratios"]:
        lines += [
            "",
            "| connections | "
            + " | ".join(f"ours / {name}" for name in YARDSTICKS)
            + " | ours / ceiling | p50 ours - limit (ms) |",
            "|---:|" + "---:|" * (len(YARDSTICKS) + 2),
        ]
        for row in result["ratios"]:
            cells = [fmt(row.get(f"ours_over_{name}"), "x") for name in (*YARDSTICKS, "ceiling")]
            lines.append(
                f"| {row['connections']} | {' | '.join(cells)} | "
                f"{fmt(row.get('p50_ours_minus_limit_ms'), '', signed=True)} |"
            )
        lines += [
            "",
            "The ceiling is the limit with our model: one request of the bare ASGI app plus one "
            f"image of the model alone at batch {CEILING_BATCH}, on the same core "
            "(1 / (1 / bare req/s + 1 / model images/s)).",
        ]
    if result["batch"]["summary"]:
        lines += [
            "",
            f"## POST /predict/batch ({result['settings']['batch_images']} images per request)",
            "",
            "| server | connections | req/s | images/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in result["batch"]["summary"]:
            lines.append(
                f"| {row['server']} | {row['connections']} | {row['requests_per_s']:.1f} | "
                f"{row['images_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['errors']} |"
            )
    if result["model_only"]:
        lines += [
            "",
            f"## Model only (images/s, {result['model_only']['threads']} torch thread(s) "
            "on the server CPUs)",
            "",
        ]
        for device in result["model_only"]["devices"]:
            batches = sorted({r["batch_size"] for r in device["rows"]})
            variants = list(dict.fromkeys(r["variant"] for r in device["rows"]))
            lines += [
                f"{device['device_name']}:",
                "",
                "| variant | " + " | ".join(f"batch {b}" for b in batches) + " |",
                "|---|" + "---:|" * len(batches),
            ]
            for variant in variants:
                cells = [find(device["rows"], variant=variant, batch_size=b) for b in batches]
                lines.append(
                    f"| {variant} | "
                    + " | ".join(f"{c['images_per_s']:.0f}" if c else "" for c in cells)
                    + " |"
                )
            diffs = device.get("max_abs_diff_vs_torchscript", {})
            if diffs:
                lines.append(
                    "\nLargest logit difference against the file as loaded: "
                    + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
                )
            for variant, why in device.get("skipped", {}).items():
                lines.append(f"\n{variant} skipped: {why}")
            lines.append("")
    lines += ["", "## Bars", "", "| bar | result | numbers |", "|---|---|---|"]
    for row in result["bars"]:
        lines.append(f"| {row['bar']} | {verdict(row['holds'])} | {row['detail']} |")
    return "\n".join(lines) + "\n"


def fmt(value: float | None, suffix: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}{suffix}" if signed else f"{value:.2f}{suffix}"


def console_table(result: dict[str, Any]) -> str:
    """A compact plain-text version of the tables and verdicts, for the terminal."""
    lines = [f"{'server':<10}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    for row in result["load"]["summary"]:
        lines.append(
            f"{row['server']:<10}{row['connections']:>6}{row['requests_per_s']:>10.0f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['errors']:>8}"
        )
    for row in result["ratios"]:
        over = ", ".join(
            f"ours/{name} {fmt(row.get(f'ours_over_{name}'), 'x')}"
            for name in (*YARDSTICKS, "ceiling")
        )
        lines.append(
            f"{row['connections']:>4} connections: {over}"
            f", p50 ours-limit {fmt(row.get('p50_ours_minus_limit_ms'), ' ms', signed=True)}"
        )
    batch_images = result["settings"]["batch_images"]
    for row in result["batch"]["summary"]:
        lines.append(
            f"batch x{batch_images} {row['server']:<8} c={row['connections']}: "
            f"{row['images_per_s']:.0f} images/s ({row['requests_per_s']:.1f} req/s), "
            f"p50 {row['p50_ms']:.1f} ms, {row['errors']} errors"
        )
    for row in result["bars"]:
        lines.append(f"[{verdict(row['holds'])}] {row['bar']}: {row['detail']}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> str | None:
    """Throughput and p99 against connections, one line per server; None, or why no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no plot: {exc}"
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in LABELS:
        rows = sorted(
            (r for r in result["load"]["summary"] if r["server"] == server),
            key=lambda r: r["connections"],
        )
        if not rows:
            continue
        conns = [r["connections"] for r in rows]
        ax_rps.plot(conns, [r["requests_per_s"] for r in rows], marker="o", label=LABELS[server])
        ax_p99.plot(conns, [r["p99_ms"] for r in rows], marker="o", label=LABELS[server])
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    all_conns = sorted({r["connections"] for r in result["load"]["summary"]})
    for ax, title, unit in ((ax_rps, "throughput", "req/s"), (ax_p99, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_conns, [str(c) for c in all_conns])
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("connections")
        ax.set_ylabel(unit)
        ax.set_title(f"POST /predict {title}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_p99.set_yscale("log")
    ax_p99.yaxis.set_major_formatter(ScalarFormatter())
    ax_p99.yaxis.set_minor_formatter(NullFormatter())
    ax_rps.set_ylim(bottom=0)
    machine = result["machine"]
    fig.suptitle(
        f"{result['name']}: {machine['cpu_model']}, server CPUs "
        f"{result['settings']['server_cpus']}, wrk CPUs {result['settings']['client_cpus']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_outputs(result: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / result["name"]
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result))
    png = stem.with_suffix(".png")
    why_not = plot(result, png)
    if why_not is None:
        paths.append(png)
    else:
        result["plot"] = why_not
    return paths
