"""Real, tiny trainings on CPU: smoke run and export, resume, data errors, 2-process gloo DDP."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from app import __version__
from tests.conftest import REPO_ROOT, TEST_DATA_DIR
from training import train as train_module
from training.config import TrainConfig, parse_args
from training.data import MNIST_FILES, DataError, augment, ensure_mnist, read_idx, roughen
from training.model import DigitSumNet, ModelConfig
from training.train import main

SHIPPED_RAW = TEST_DATA_DIR / "MNIST" / "raw"


def _idx_bytes(tensor: torch.Tensor) -> bytes:
    dims = tensor.shape
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(header + tensor.to(torch.uint8).numpy().tobytes())


@pytest.fixture(scope="module")
def sliced_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir in torchvision's layout, sliced from the shipped test set: 'train' is the first
    1,000 test images, 't10k' the next 300. Checksums differ from MNIST's (hence
    --skip-checksums)."""
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = read_idx(SHIPPED_RAW / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHIPPED_RAW / "t10k-labels-idx1-ubyte.gz")
    for split, part in (("train", slice(0, 1000)), ("t10k", slice(1000, 1300))):
        (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(_idx_bytes(images[part]))
        (raw / f"{split}-labels-idx1-ubyte.gz").write_bytes(_idx_bytes(labels[part]))
    return root


def _smoke_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data-dir",
        str(data),
        "--out",
        str(out),
        "--state",
        str(out / "state.pt"),
        "--device",
        "cpu",
        "--smoke",
        "--skip-checksums",
        "--no-download",
        *extra,
    ]


def test_smoke_training_exports_a_checkpoint_that_matches_the_eager_model(
    sliced_mnist: Path, tmp_path: Path
) -> None:
    assert main(_smoke_args(sliced_mnist, tmp_path, "--epochs", "1")) == 0
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(
        str(tmp_path / "digitsum.pt"), map_location="cpu", _extra_files=extra
    ).eval()
    card = json.loads(extra["metadata.json"])
    eager = DigitSumNet(
        ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in card["model"].items()})
    )
    # The export is the weight average of the epoch that scored best on validation, with the
    # temperatures fitted after training.
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert card["selection"]["epoch"] == state["best"]["epoch"]
    eager.load_state_dict(state["best"]["ema"])
    # ...whose addition table was then refit alone, at the sharpened belief the export reads
    # (training/train.py settle_addition_table); every other weight is the state's.
    assert card["model"]["belief_sharpness"] == card["training"]["config"]["settle_sharpness"]
    assert not torch.equal(eager.addition_table, scripted.addition_table)
    with torch.no_grad():
        eager.addition_table.copy_(scripted.addition_table)
    eager.digit_temperature.fill_(card["calibration"]["digit_temperature"])
    eager.sum_temperature.fill_(card["calibration"]["sum_temperature"])
    eager.eval()
    image, number = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    with torch.inference_mode():
        for want, got in zip(eager(image, number), scripted(image, number), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert set(card["metrics"]) >= {"digit_accuracy", "sum_accuracy", "consistency"}
    assert json.loads((tmp_path / "digitsum.json").read_text())["file"]["sha256"]
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000


def test_a_narrow_student_learns_from_a_teacher_and_exports_its_settled_table(
    sliced_mnist: Path, tmp_path: Path
) -> None:
    """--channels, --teacher and --settle-steps together: the recipe of the fast trunk
    (docs/model.md, run 13)."""
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    assert main(_smoke_args(sliced_mnist, teacher_dir, "--epochs", "1")) == 0
    teacher = teacher_dir / "digitsum.pt"
    student_args = ("--epochs", "1", "--channels", "8,8,16", "--teacher", str(teacher))
    assert main(_smoke_args(sliced_mnist, student_dir, *student_args)) == 0
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(
        str(student_dir / "digitsum.pt"), map_location="cpu", _extra_files=extra
    ).eval()
    card = json.loads(extra["metadata.json"])
    assert card["model"]["channels"] == [8, 8, 16]
    assert card["model"]["belief_sharpness"] == card["training"]["config"]["settle_sharpness"]
    assert card["training"]["config"]["teacher"] == str(teacher)
    # Everything but the addition table is the selected epoch's weight average; the table was
    # refit after training, so it differs from the state's.
    state = torch.load(student_dir / "state.pt", weights_only=False)
    trained = state["best"]["ema"]
    assert not torch.equal(trained["addition_table"], scripted.addition_table)
    exported = scripted.state_dict()
    for name, tensor in trained.items():
        if name not in ("addition_table", "digit_temperature", "sum_temperature"):
            torch.testing.assert_close(exported[name], tensor)


def test_training_runs_from_a_source_tree_without_the_project_installed(
    sliced_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU machine runs the trainer with PYTHONPATH only (scripts/gpu_check.sh): no package
    metadata for digitsum there, and the card's version comes from app.__version__."""
    real_from_name = importlib.metadata.Distribution.from_name

    def not_installed(cls: type[importlib.metadata.Distribution], name: str) -> Any:
        if name.lower() == "digitsum":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_from_name(name)

    monkeypatch.setattr(importlib.metadata.Distribution, "from_name", classmethod(not_installed))
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("digitsum")
    assert main(_smoke_args(sliced_mnist, tmp_path, "--epochs", "1")) == 0
    card = json.loads((tmp_path / "digitsum.json").read_text())
    assert card["version"] == __version__


def test_page_negatives_are_mined_only_when_asked_and_reach_the_training_batches(
    sliced_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_epoch = train_module.train_one_epoch
    seen: list[int] = []

    def counting_pages(*args: Any, **kwargs: Any) -> float:
        seen.append(len(args[6]))  # the page pool
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", counting_pages)
    assert main(_smoke_args(sliced_mnist, tmp_path / "off", "--epochs", "1")) == 0
    off = json.loads((tmp_path / "off" / "digitsum.json").read_text())
    assert off["dataset"]["synthetic"]["page_negatives"] == 0
    assert not list((tmp_path / "off").glob("pages-*.pt"))  # nothing mined, nothing cached
    assert seen == [0]

    # Seed 1008: two of its first 20 blank photos reach the model (tests/training/test_pages.py);
    # most seeds' first 20 are all refused by the pipeline now.
    args = _smoke_args(
        sliced_mnist, tmp_path / "on", "--epochs", "1", "--page-photos", "20", "--seed", "1008"
    )
    assert main(args) == 0
    on = json.loads((tmp_path / "on" / "digitsum.json").read_text())
    assert on["dataset"]["synthetic"]["page_negatives"] >= 1
    assert on["training"]["config"]["page_photos"] == 20
    assert seen[1] == on["dataset"]["synthetic"]["page_negatives"]


def test_mnist_roughen_keeps_that_share_of_mnist_images_as_warped_only() -> None:
    warped = torch.rand((400, 1, 28, 28), generator=torch.Generator().manual_seed(1))

    def batch(share: float) -> torch.Tensor:
        return train_module.roughen_batch(warped, 300, share, torch.Generator().manual_seed(2))

    def untouched(image: torch.Tensor) -> torch.Tensor:
        return (image == warped).flatten(1).all(1)

    everything = roughen(warped, torch.Generator().manual_seed(2))
    assert torch.equal(batch(1.0), everything)  # the default: as every earlier run
    assert untouched(batch(0.0))[:300].all()
    # The synthetic rows are roughened at any share, as before (roughen() leaves some alone).
    assert torch.equal(batch(0.0)[300:], everything[300:])
    # Half kept as warped, and roughen() leaves some of the other half alone too.
    alone = untouched(everything)[:300].float().mean().item()
    kept = untouched(batch(0.5))[:300].float().mean().item()
    assert alone < 0.6
    assert abs(kept - (0.5 + 0.5 * alone)) < 0.1


def test_mnist_warp_scales_only_the_mnist_rows_and_draws_the_same_numbers() -> None:
    images = torch.rand((40, 1, 28, 28), generator=torch.Generator().manual_seed(1))

    def warp(strength: float | torch.Tensor) -> torch.Tensor:
        return augment(images, torch.Generator().manual_seed(2), strength)

    full, half, none = warp(1.0), warp(0.5), warp(0.0)
    rows = warp(train_module.warp_strength(40, 30, 0.5))
    assert torch.equal(warp(train_module.warp_strength(40, 30, 1.0)), full)  # earlier runs
    assert torch.equal(rows[:30], half[:30])  # MNIST's rows at the strength asked for
    assert torch.equal(rows[30:], full[30:])  # the synthetic rows as before
    assert (none - images).abs().max() < 1e-4  # strength 0: no warp at all
    assert (half - images).abs().mean() < (full - images).abs().mean()


@pytest.mark.parametrize("flag", ["--mnist-warp", "--mnist-roughen"])
def test_mnist_shares_outside_zero_to_one_are_refused(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert getattr(parse_args([flag, "0.25"]), flag[2:].replace("-", "_")) == 0.25
    with pytest.raises(SystemExit):
        parse_args([flag, "1.5"])
    assert f"{flag} must be between 0 and 1" in capsys.readouterr().err


def test_run_killed_mid_epoch_leaves_outputs_untouched_and_resumes(
    sliced_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "models"
    out.mkdir()
    (out / "digitsum.pt").write_bytes(b"the checkpoint shipped before")
    real_epoch = train_module.train_one_epoch

    def killed_in_epoch_2(*args: Any, **kwargs: Any) -> float:
        if args[8] == 2:  # epoch
            raise KeyboardInterrupt  # what Ctrl-C or a SIGINT does mid-epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        main(_smoke_args(sliced_mnist, out, "--epochs", "2", "--state", str(tmp_path / "s.pt")))
    assert (out / "digitsum.pt").read_bytes() == b"the checkpoint shipped before"
    assert not list(out.glob("*.tmp"))
    assert not list(out.glob(".*.tmp"))
    assert [h["epoch"] for h in torch.load(tmp_path / "s.pt", weights_only=False)["history"]] == [1]

    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    resume = _smoke_args(sliced_mnist, out, "--epochs", "2", "--state", str(tmp_path / "s.pt"))
    assert main([*resume, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    state = torch.load(tmp_path / "s.pt", weights_only=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    torch.jit.load(str(out / "digitsum.pt"))  # now a real checkpoint


def test_resume_refuses_a_changed_schedule(
    sliced_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_smoke_args(sliced_mnist, tmp_path, "--epochs", "1")) == 0
    assert main(_smoke_args(sliced_mnist, tmp_path, "--epochs", "2", "--resume")) == 2
    assert "started with different --epochs" in capsys.readouterr().err


def test_wrong_checksum_is_a_clear_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataError, match=r"checksum mismatch .* delete it to download again"):
        ensure_mnist(tmp_path, download=False)


def test_missing_files_without_network_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchvision.datasets import MNIST

    def offline(self: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no route to host")

    monkeypatch.setattr(MNIST, "download", offline)
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--smoke", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "download failed" in err
    assert "copy the four *.gz files" in err
    assert "Traceback" not in err


def test_no_download_flag_reports_the_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"MNIST files missing in .*train-images-idx3-ubyte\.gz"):
        ensure_mnist(tmp_path, download=False)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).mkdir()  # a folder where a file should be: unreadable, even for root
    with pytest.raises(DataError, match="cannot read"):
        ensure_mnist(tmp_path, download=False)


def test_read_only_data_folder_is_enough(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes((SHIPPED_RAW / name).read_bytes())
    raw.chmod(0o555)
    try:
        assert ensure_mnist(tmp_path, splits=("t10k",), download=False) == raw
    finally:
        raw.chmod(0o755)


@pytest.mark.slow
def test_two_process_gloo_training(sliced_mnist: Path, tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "training",
            *_smoke_args(sliced_mnist, tmp_path, "--epochs", "1", "--threads", "1"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training on cpu x2" in result.stdout
    card = json.loads((tmp_path / "digitsum.json").read_text())
    assert card["training"]["processes"] == 2


def test_mouse_drawings_join_the_synthetic_pools_only_when_asked(
    sliced_mnist: Path, tmp_path: Path
) -> None:
    assert main(_smoke_args(sliced_mnist, tmp_path / "off", "--epochs", "1")) == 0
    off = json.loads((tmp_path / "off" / "digitsum.json").read_text())["dataset"]["synthetic"]
    args = ("--epochs", "1", "--drawing-digits", "40", "--drawing-negatives", "10")
    assert main(_smoke_args(sliced_mnist, tmp_path / "on", *args)) == 0
    on = json.loads((tmp_path / "on" / "digitsum.json").read_text())["dataset"]["synthetic"]
    # A drawing the pipeline refuses is drawn again, so every one asked for is there.
    assert on["digits"] == off["digits"] + 40
    assert on["negatives"] == off["negatives"] + 10
    assert on["validation_digits"] > off["validation_digits"]  # the same share as training's


def _twin_and_final(
    data: Path, tmp_path: Path, *final_extra: str
) -> tuple[int, dict[str, Any], Path]:
    twin_dir, final_dir = tmp_path / "twin", tmp_path / "final"
    recipe = ("--epochs", "2", "--channels", "8,8,16")
    assert main(_smoke_args(data, twin_dir, *recipe)) == 0
    twin = twin_dir / "digitsum.pt"
    code = main(_smoke_args(data, final_dir, *recipe, "--final-fit", str(twin), *final_extra))
    return code, json.loads((twin_dir / "digitsum.json").read_text()), final_dir


def test_final_fit_trains_on_the_validation_slice_too_and_carries_the_twins_calibration(
    sliced_mnist: Path, tmp_path: Path
) -> None:
    code, twin, final_dir = _twin_and_final(sliced_mnist, tmp_path)
    assert code == 0
    card = json.loads((final_dir / "digitsum.json").read_text())
    # All of the training split: the twin's training images and its validation slice.
    assert card["dataset"]["validation_images"] == 0
    assert card["dataset"]["train_images"] == (
        twin["dataset"]["train_images"] + twin["dataset"]["validation_images"]
    )
    # The last epoch, not one chosen on data the final fit has seen.
    state = torch.load(final_dir / "state.pt", weights_only=False)
    assert card["selection"]["epoch"] == state["best"]["epoch"] == 2
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert "val_digit_accuracy" not in state["history"][-1]
    # Temperatures and threshold are the twin's, by rule; the twin is named by its hash.
    assert card["calibration"]["digit_temperature"] == twin["calibration"]["digit_temperature"]
    assert card["calibration"]["sum_temperature"] == twin["calibration"]["sum_temperature"]
    assert card["no_digit"]["threshold"] == twin["no_digit"]["threshold"]
    assert card["selection"]["twin"]["sha256"] == twin["file"]["sha256"]
    scripted = torch.jit.load(str(final_dir / "digitsum.pt"))
    assert float(scripted.digit_temperature) == pytest.approx(
        twin["calibration"]["digit_temperature"]
    )
    # The exported weights are the last epoch's average (its table settled afterwards).
    exported = scripted.state_dict()
    for name, tensor in state["best"]["ema"].items():
        if name not in ("addition_table", "digit_temperature", "sum_temperature"):
            torch.testing.assert_close(exported[name], tensor)


def test_final_fit_refuses_a_twin_trained_with_another_recipe(
    sliced_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, final_dir = _twin_and_final(sliced_mnist, tmp_path, "--lr", "0.001")
    assert code == 2
    assert "--final-fit" in capsys.readouterr().err
    assert not (final_dir / "digitsum.pt").exists()


def test_a_twin_from_before_a_flag_existed_ran_at_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run 20 (before --mnist-roughen) is the twin of a final fit of its recipe; a twin that
    set the flag otherwise is not."""
    twin_file = tmp_path / "twin.pt"
    twin_file.write_bytes(b"a checkpoint")
    theirs = json.loads(json.dumps(TrainConfig().to_dict()))
    del theirs["mnist_roughen"]
    card = {
        "training": {"config": theirs},
        "selection": {"epoch": 3},
        "calibration": {"digit_temperature": 1.1, "sum_temperature": 1.2},
        "no_digit": {"threshold": 0.5},
    }
    monkeypatch.setattr(train_module.export, "load_checkpoint", lambda path: (None, card))
    assert train_module.load_twin(TrainConfig(final_fit=twin_file)).selected_epoch == 3
    theirs["mnist_roughen"] = 0.5
    with pytest.raises(DataError, match="mnist_roughen"):
        train_module.load_twin(TrainConfig(final_fit=twin_file))
