"""The GPU check's harness (scripts/gpu_check.py, scripts/gpu_wheels.py), without a GPU: stages
run whatever another did, time out on their own, skip CUDA with the reason, and the figures and
the table are read from what the commands print. `make gpu-rehearsal` runs the whole check."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import gpu_check
from scripts.gpu_check import Context, Result, Stage
from tests.conftest import REPO_ROOT

PY = sys.executable


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(out=tmp_path / "out", work=tmp_path / "work", data_dir=tmp_path / "data")


def _python(code: str) -> list[str]:
    return [PY, "-c", code]


def test_a_failing_stage_is_reported_and_the_next_one_runs(ctx: Context) -> None:
    deadline = time.monotonic() + 60
    failed = gpu_check.run_stage(
        Stage("broken", "fails", _python("print('about to fail'); raise SystemExit(3)"), 30),
        ctx,
        deadline,
    )
    passed = gpu_check.run_stage(Stage("fine", "passes", _python("print('ok')"), 30), ctx, deadline)
    assert failed is not None
    assert (failed.status, failed.note) == ("FAIL", "exit 3: about to fail")
    assert passed is not None
    assert passed.status == "PASS"


def test_a_stage_past_its_timeout_is_stopped_and_failed(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_check, "MIN_STAGE_S", 0.0)
    sleeper = _python("import time; print('started', flush=True); time.sleep(60)")
    started = time.monotonic()
    result = gpu_check.run_stage(Stage("slow", "sleeps", sleeper, 2), ctx, started + 60)
    assert result is not None
    assert (result.status, result.note) == ("FAIL", "timed out after 2 s")
    assert time.monotonic() - started < 15
    assert "started" in capsys.readouterr().out  # echoed as it came


def test_cuda_stages_say_why_they_skip_and_stand_ins_run_only_without_cuda(ctx: Context) -> None:
    deadline = time.monotonic() + 60
    cuda_stage = Stage("train-cuda", "", _python("raise SystemExit(1)"), 30, needs_cuda=True)
    stand_in = Stage("train-cpu", "", _python("print(1)"), 30, stands_in_for="train-cuda")
    skipped = gpu_check.run_stage(cuda_stage, ctx, deadline)
    assert skipped is not None
    assert (skipped.status, skipped.note) == ("SKIP", "no CUDA")
    ran = gpu_check.run_stage(stand_in, ctx, deadline)
    assert ran is not None
    assert (ran.status, ran.note) == ("PASS", "CPU stand-in for train-cuda")
    ctx.cuda = True
    assert gpu_check.run_stage(stand_in, ctx, deadline) is None


def test_a_stage_whose_input_an_earlier_stage_did_not_write_is_skipped(
    ctx: Context, tmp_path: Path
) -> None:
    stage = Stage("eval", "", _python("print(1)"), 30, needs_file=tmp_path / "digitsum.pt")
    result = gpu_check.run_stage(stage, ctx, time.monotonic() + 60)
    assert result is not None
    assert (result.status, result.note) == ("SKIP", "no digitsum.pt (an earlier stage)")


def test_a_stage_that_cannot_get_its_minimum_time_is_skipped(ctx: Context) -> None:
    result = gpu_check.run_stage(Stage("late", "", _python("print(1)"), 30), ctx, time.monotonic())
    assert result is not None
    assert result.status == "SKIP"
    assert result.note.startswith("out of time")


def test_the_table_has_a_line_per_stage_and_the_counts() -> None:
    text = gpu_check.table(
        [
            Result("torch", "PASS", 3.25),
            Result("train-cuda", "SKIP", 0.0, "no CUDA"),
            Result("serve-cpu-smoke", "FAIL", 12.0, "exit 1: boom"),
        ]
    )
    lines = text.splitlines()
    assert lines[2] == "torch            PASS        3.2"
    assert lines[3] == "train-cuda       SKIP        0.0  no CUDA"
    assert lines[4] == "serve-cpu-smoke  FAIL       12.0  exit 1: boom"
    assert lines[-1] == "1 pass, 1 fail, 1 skip"


def test_training_figures_come_from_the_epoch_lines_and_the_card(ctx: Context) -> None:
    output = (
        "training on cuda:0 x1: 60,000 images\n"
        "\repoch 1:  50%|#####     | 234/468\r                \r"
        "epoch   1/24  loss 0.5000  digit 98.00%  sum 97.00%  consistency 99.00%  3.1s\n"
        "epoch   2/24  loss 0.3000  digit 99.00%  sum 98.00%  consistency 99.50%  2.9s\n"
    )
    with pytest.raises(gpu_check.StageFailed, match="no export after 2 epoch"):
        gpu_check.training_figures("\n".join(output.splitlines()), ctx)
    (ctx.work / "model").mkdir(parents=True)
    card = {"metrics": {"digit_accuracy": 0.99, "sum_accuracy": 0.98, "consistency": 0.995}}
    (ctx.work / "model" / "digitsum.json").write_text(json.dumps(card))
    figures = gpu_check.training_figures("\n".join(output.splitlines()), ctx)
    assert figures["epochs_done"] == 2
    assert figures["epochs_planned"] == 24
    assert figures["epoch_seconds"] == [3.1, 2.9]
    assert figures["train_s"] == 6.0
    assert figures["card_metrics"] == card["metrics"]


EVALUATE_OUTPUT = """metric              value  over
--------------------------------------------
digit accuracy    99.660%  10,000 images
sum accuracy      99.665%  100,000 pairs
consistency       99.995%  sum == digit + number
"""


def test_an_evaluation_is_held_against_the_card_beside_the_checkpoint(
    ctx: Context, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "digitsum.pt"
    metrics = {"images": 10_000, "digit_accuracy": 0.9966, "sum_accuracy": 0.99665}
    checkpoint.with_suffix(".json").write_text(
        json.dumps({"metrics": {**metrics, "consistency": 0.99995}})
    )
    figures = gpu_check.evaluation_figures(checkpoint)(EVALUATE_OUTPUT, ctx)
    assert figures["compared"] == "yes"
    assert figures["measured"]["sum_accuracy"] == pytest.approx(0.99665)
    checkpoint.with_suffix(".json").write_text(
        json.dumps({"metrics": {**metrics, "consistency": 0.9990}})
    )
    with pytest.raises(gpu_check.StageFailed, match="consistency"):
        gpu_check.evaluation_figures(checkpoint)(EVALUATE_OUTPUT, ctx)


def test_pytest_and_model_only_figures_are_read_from_their_output(ctx: Context) -> None:
    tests = gpu_check.pytest_figures(
        "CUDA fp32 vs CPU: 0 answers differ (near-ties only)\n"
        "bf16: 36 of 200,000 answers differ from fp32\nfp16: 1 of 200,000 answers differ\n"
        "5 passed, 1 skipped in 12.34s\n",
        ctx,
    )
    assert tests == {"CUDA fp32 vs CPU": 0, "bf16": 36, "fp16": 1, "pytest": "5 passed, 1 skipped"}
    model_only = {
        "cuda_fuser": "off",
        "devices": [
            {
                "device": "cuda",
                "rows": [{"variant": "frozen", "batch_size": 64, "images_per_s": 123456.7}],
                "skipped": {"optimized": "RuntimeError: x"},
                "max_abs_diff_vs_torchscript": {"frozen": 1e-6},
            }
        ],
    }
    figures = gpu_check.model_only_figures("noise\n" + json.dumps(model_only), ctx)
    assert figures["cuda"]["images_per_s"] == {"frozen": {64: 123457}}
    assert figures["cuda"]["skipped"] == {"optimized": "RuntimeError: x"}


@pytest.mark.parametrize(
    ("argv", "listed"),
    [([], "scripts/gpu_wheels.txt"), (["--device"], "scripts/gpu_device.txt")],
)
def test_the_gpu_wheel_lists_are_current(argv: list[str], listed: str) -> None:
    done = subprocess.run(
        [PY, "scripts/gpu_wheels.py", *argv, "--check", listed],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_the_carried_wheels_hold_what_the_device_lacks_and_not_torch() -> None:
    names = {
        line.split("==")[0]
        for line in (REPO_ROOT / "scripts" / "gpu_wheels.txt").read_text().splitlines()
        if not line.startswith("#")
    }
    assert {"fastapi", "opentelemetry-api", "python-multipart", "pytest-timeout"} <= names
    assert not {n for n in names if n in {"torch", "torchvision", "triton", "numpy", "pillow"}}
    assert not {n for n in names if n.startswith(("nvidia-", "cuda-"))}
