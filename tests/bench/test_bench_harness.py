"""The benchmark harness itself works: it drives wrk, parses it, and writes complete results.

No timing is asserted here (performance claims live in `make bench`'s side-by-side ratios); the
run is a 1-second pass against the empty endpoint only, so it needs wrk but not the model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import model_only, payload, report, run, servers
from bench.wrk import WrkError, parse_summary

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = REPO_ROOT / "models" / "digitsum.pt"

WRK_LINE = (
    'BENCH_JSON {"requests": 2000, "duration_us": 2000000, "bytes": 1, "connect_errors": 0, '
    '"read_errors": 1, "write_errors": 0, "status_errors": 3, "timeouts": 2, "p50_us": 750, '
    '"p90_us": 900, "p99_us": 1500, "mean_us": 800.0, "max_us": 9000}'
)


def test_parse_summary_reads_the_lua_line() -> None:
    result = parse_summary(f"Running 2s test\n{WRK_LINE}\n", connections=16)

    assert result.requests_per_s == pytest.approx(1000.0)
    assert result.p50_ms == pytest.approx(0.75)
    assert result.p99_ms == pytest.approx(1.5)
    assert (result.socket_errors, result.status_errors, result.errors) == (3, 3, 6)


def test_parse_summary_without_the_line_raises() -> None:
    with pytest.raises(WrkError, match="BENCH_JSON"):
        parse_summary("unable to connect to 127.0.0.1:1\n", connections=1)


def test_batch_body_has_one_part_per_field_and_image() -> None:
    body = payload.batch_body(b"PNG", count=3)

    assert body.count(b'name="images"; filename="digit.png"') == 3
    assert body.count(b'name="numbers"') == 3
    assert body.endswith(f"--{payload.BOUNDARY}--\r\n".encode())


def _row(server: str, connections: int, rps: float, p50: float, errors: int = 0) -> dict[str, Any]:
    return {
        "server": server,
        "connections": connections,
        "requests_per_s": rps,
        "p50_ms": p50,
        "errors": errors,
        "requests": 1000,
    }


def test_bars_hold_and_miss_at_their_thresholds() -> None:
    load = [
        _row("bare", 64, 40000, 1.0),
        _row("limit", 1, 1300, 0.70),
        _row("limit", 64, 1000, 40.0),
        _row("tutorial", 1, 280, 3.0),
        _row("tutorial", 64, 300, 200.0),
        _row("litserve", 64, 240, 250.0),
        _row("ours", 1, 1200, 1.71),
        _row("ours", 64, 1199, 50.0, errors=1),
    ]
    batch = [dict(_row("ours", 4, 60, 60.0), images_per_s=3840.0)]
    model_only = {
        "devices": [
            {
                "rows": [
                    {"variant": "torchscript", "batch_size": 64, "images_per_s": 5000.0},
                    {"variant": "frozen", "batch_size": 64, "images_per_s": 6400.0},
                ]
            }
        ]
    }

    verdicts = [b["holds"] for b in report.bars(load, batch, model_only, batch_images=64)]

    # 1199/1000 >= 0.8 but < 1.2; 1199/300 >= 3; 1199/240 < 5; one error; +1.01 ms > 1 ms;
    # 3840/6400 = 0.6 exactly. The bare app has no bar.
    assert verdicts == [True, False, True, False, False, False, True]
    load[2]["requests_per_s"] = 999
    load[5]["requests_per_s"] = 239
    assert [b["holds"] for b in report.bars(load, batch, model_only, 64)][:4] == [True] * 4
    load[2]["requests_per_s"] = 1500  # 1199/1500 < 0.8: the floor of issue 4 is missed
    assert report.bars(load, batch, model_only, 64)[0]["holds"] is False


def test_ratios_set_ours_against_every_yardstick_measured() -> None:
    load = [
        _row("bare", 64, 40000, 1.0),
        _row("limit", 64, 4000, 10.0),
        _row("litserve", 64, 1000, 60.0),
        _row("ours", 64, 8000, 8.0),
    ]
    (row,) = report.ratios(load, [64])
    assert row == {
        "connections": 64,
        "ours_over_bare": 0.2,
        "ours_over_limit": 2.0,
        "ours_over_litserve": 8.0,
        "p50_ours_minus_limit_ms": -2.0,
    }


def test_ours_is_set_against_the_ceiling_of_a_bare_request_plus_one_image() -> None:
    """The limit with our model: 1 / (1 / bare req/s + 1 / model images/s at batch 64)."""
    load = [_row("bare", 64, 20000, 1.0), _row("ours", 64, 4000, 8.0)]
    model_only = {
        "devices": [{"rows": [{"variant": "frozen", "batch_size": 64, "images_per_s": 20000.0}]}]
    }
    (row,) = report.ratios(load, [64], model_only)
    assert row["ceiling_requests_per_s"] == pytest.approx(10000.0)
    assert row["ours_over_ceiling"] == pytest.approx(0.4)
    assert "ours_over_ceiling" not in report.ratios(load, [64])[0]  # no model-only run


def test_the_limit_validates_the_number_and_limit_bare_does_not() -> None:
    from fastapi.testclient import TestClient

    from bench import empty_app

    form = {"files": {"image": ("d.png", b"png", "image/png")}}
    with TestClient(empty_app.app) as limit, TestClient(empty_app.bare_app) as bare:
        assert limit.post("/predict", data={"number": "12"}, **form).status_code == 422
        assert bare.post("/predict", data={"number": "12"}, **form).status_code == 200
        assert limit.post("/predict", data={"number": "9"}, **form).status_code == 200
        batch = {"files": [("images", ("a.png", b"png", "image/png"))] * 2}
        assert (
            limit.post("/predict/batch", data={"numbers": ["1", "10"]}, **batch).status_code == 422
        )
        assert (
            limit.post("/predict/batch", data={"numbers": ["1", "9"]}, **batch).status_code == 200
        )


def test_batch_bar_pairs_each_repeat_with_the_model_only_run_beside_it() -> None:
    """With a yardstick measured after each repeat's batch run, the verdict is the median of
    the per-repeat ratios: a machine that slowed down between the start-of-run model-only
    figure and the batch runs neither passes nor fails the bar by itself."""
    model_only = {
        "devices": [{"rows": [{"variant": "frozen", "batch_size": 64, "images_per_s": 10000.0}]}]
    }
    runs = [
        dict(_row("ours", 4, 60, 60.0), repeat=repeat, images_per_s=images)
        for repeat, images in enumerate([5000.0, 5600.0, 6200.0])
    ]
    batch = [dict(_row("ours", 4, 60, 60.0), images_per_s=5600.0)]  # the median run
    slower = [
        {"repeat": r, "variant": "frozen", "batch_size": 64, "images_per_s": 9000.0}
        for r in range(3)
    ]

    def batch_bar(yardsticks: list[dict[str, object]]) -> dict[str, object]:
        return report.bars([], batch, model_only, 64, runs, yardsticks)[-1]

    assert batch_bar([])["holds"] is False  # 5600 / 10000 at the start of the run
    paired = batch_bar(slower)  # 5000/9000, 5600/9000, 6200/9000: median 0.62
    assert paired["holds"] is True
    assert "median of 3 paired repeats 0.62x" in str(paired["detail"])
    faster = [dict(y, images_per_s=11000.0) for y in slower]  # median 5600/11000 = 0.51
    assert batch_bar(faster)["holds"] is False


def test_a_repeats_yardstick_is_the_mean_of_the_timings_around_it() -> None:
    before = {"variant": "optimized", "batch_size": 64, "images_per_s": 16000.0}
    after = dict(before, images_per_s=20000.0)
    paired = run.paired_yardstick(before, after, repeat=2)
    assert paired["images_per_s"] == 18000.0
    assert (paired["images_per_s_before"], paired["images_per_s_after"], paired["repeat"]) == (
        16000.0,
        20000.0,
        2,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_quick_run_against_the_empty_endpoint_writes_results(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "bench",
        "--servers",
        "limit",
        "--connections",
        "1,2",
        "--duration",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--no-model-only",
        "--batch-images",
        "4",
        "--batch-connections",
        "1",
        "--name",
        "smoke",
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert {"machine", "settings", "payload", "load", "batch", "ratios", "bars", "command"} <= (
        result.keys()
    )
    assert [(r["server"], r["connections"]) for r in result["load"]["summary"]] == [
        ("limit", 1),
        ("limit", 2),
    ]
    for row in result["load"]["summary"] + result["batch"]["summary"]:
        assert row["requests"] > 0
        assert row["errors"] == 0
        assert {"requests_per_s", "p50_ms", "p99_ms", "repeats"} <= row.keys()
    assert result["batch"]["summary"][0]["images_per_s"] == pytest.approx(
        4 * result["batch"]["summary"][0]["requests_per_s"]
    )
    assert all(bar["holds"] is None for bar in result["bars"])  # ours was not run
    assert "| limit | 1 |" in (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").stat().st_size > 0


def test_model_only_reports_a_variant_that_fails_when_run_and_times_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A variant can build and fail only at its first calls (TorchScript's fuser compiles then,
    on CUDA): the others are still timed and the failure is reported, not raised."""
    real_load = model_only.load_variants

    def with_a_broken_variant(
        path: Path,
        device: torch.device,
        wanted: tuple[str, ...] = model_only.DEFAULT_VARIANTS,
        calibration: Path | None = None,
    ) -> tuple[dict[str, model_only.Model], dict[str, str]]:
        models, skipped = real_load(path, device, ("torchscript",))

        def broken(image: torch.Tensor, number: torch.Tensor) -> Any:
            raise RuntimeError("fusion group failed to compile")

        return {**models, "frozen": broken}, skipped

    monkeypatch.setattr(model_only, "load_variants", with_a_broken_variant)
    result = model_only.measure(
        MODEL_PATH, torch.device("cpu"), [1, 4], 0.05, ("torchscript", "frozen")
    )
    assert [(r["variant"], r["batch_size"]) for r in result["rows"]] == [
        ("torchscript", 1),
        ("torchscript", 4),
    ]
    assert result["skipped"] == {"frozen": "RuntimeError: fusion group failed to compile"}
    assert result["max_abs_diff_vs_torchscript"] == {}


# A server that forks a worker and leaves it running when it is stopped, as LitServe does: its
# main process answers /predict and ends on SIGTERM; the worker ignores SIGTERM.
FORKING_SERVER = """
import http.server, json, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[2], "w").write(str(worker.pid))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"digit": 7, "sum": 7}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_stopped_server_leaves_no_process_behind(tmp_path: Path) -> None:
    port = servers.free_port()
    pid_file = tmp_path / "worker.pid"
    spec = servers.ServerSpec(
        "forking",
        "forks a worker",
        [sys.executable, "-c", FORKING_SERVER, str(port), str(pid_file)],
    )
    body, content_type = payload.single_body(b"png", 3), payload.CONTENT_TYPE
    with servers.RunningServer(spec, port, None, tmp_path / "log", body, content_type):
        worker = int(pid_file.read_text())
        assert _running(worker)
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(worker)
