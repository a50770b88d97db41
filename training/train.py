"""The trainer: train_one_epoch / evaluate / main(argv).

python -m training --data-dir ../shared/data            # one process, CUDA when present
torchrun --nproc-per-node 2 -m training --device cpu     # DistributedDataParallel (gloo/NCCL)
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from app import __version__
from app.devices import DeviceError, resolve_device
from training import export, plots
from training.atomic import atomic_write
from training.config import TrainConfig, parse_args
from training.data import (
    DataError,
    Split,
    augment,
    dataset_checksums,
    ensure_mnist,
    load_split,
)
from training.evaluate import Metrics, evaluate_pairs
from training.model import NUM_SUMS, DigitSumNet

SMOKE_TRAIN_IMAGES = 512
SMOKE_TEST_IMAGES = 200
SMOKE_MAX_EPOCHS = 2
# The schedule and the data order depend on these; a resumed run must keep them.
RESUME_MUST_MATCH = ("epochs", "batch_size", "lr", "seed", "smoke")


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device and its place among torchrun's processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int) -> torch.device:
    """--device as a torch.device (app.devices, the service's own parser): a bare cuda is this
    process's GPU under torchrun."""
    try:
        return resolve_device(name, local_rank)
    except DeviceError as exc:
        raise DataError(f"--device {name}: {exc}") from exc


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Single process, or torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) with DDP."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if "RANK" not in os.environ:
        return Runtime(pick_device(cfg.device, 0))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def sum_agreement_target(digit_logits: torch.Tensor, number: torch.Tensor) -> torch.Tensor:
    """The sum distribution the digit head implies: P(sum = s) = P(digit = s - number). (B, 19)

    Used only as a soft training target for the sum head (detached), never at inference.
    """
    probs = digit_logits.detach().float().softmax(1)  # (B, 10)
    index = torch.arange(10, device=number.device) + number[:, None]  # (B, 10)
    return torch.zeros(probs.shape[0], NUM_SUMS, device=probs.device).scatter_add_(1, index, probs)


def pair_loss(
    digit_logits: torch.Tensor,
    sum_logits: torch.Tensor,
    label: torch.Tensor,
    number: torch.Tensor,
    cfg: TrainConfig,
) -> torch.Tensor:
    """Cross-entropy of both heads plus the sum head's agreement with the digit head."""
    digit_logits, sum_logits = digit_logits.float(), sum_logits.float()
    loss = F.cross_entropy(digit_logits, label, label_smoothing=cfg.label_smoothing)
    loss = loss + F.cross_entropy(sum_logits, label + number, label_smoothing=cfg.label_smoothing)
    if cfg.agreement_weight:
        target = sum_agreement_target(digit_logits, number)
        loss = loss + cfg.agreement_weight * F.cross_entropy(sum_logits, target)
    return loss


def epoch_batches(
    n: int, cfg: TrainConfig, epoch: int, rt: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's shuffled image indices and a fresh number 0..9 per image for `epoch`.

    Every process draws the same permutation (seeded by seed and epoch) and takes its own
    stride of it, so the shards are disjoint and equal in size.
    """
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    numbers = torch.randint(0, 10, (n,), generator=generator)
    per_rank = n // rt.world_size
    mine = order[rt.rank :: rt.world_size][:per_rank]
    return mine, numbers[mine]


def train_one_epoch(
    model: torch.nn.Module,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: Split,
    cfg: TrainConfig,
    epoch: int,
    rt: Runtime,
) -> float:
    """One pass over this process's shard; returns the mean training loss."""
    model.train()
    indices, numbers = epoch_batches(len(train), cfg, epoch, rt)
    aug_generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 131 + rt.rank)
    use_bf16 = rt.device.type == "cuda"
    steps = len(indices) // cfg.batch_size  # drop the ragged last batch: BatchNorm needs > 1
    total = torch.zeros((), device=rt.device)
    bar = tqdm(
        range(steps),
        desc=f"epoch {epoch}",
        leave=False,
        disable=not rt.is_main,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    for step in bar:
        batch = indices[step * cfg.batch_size : (step + 1) * cfg.batch_size].to(rt.device)
        number = numbers[step * cfg.batch_size : (step + 1) * cfg.batch_size].to(rt.device)
        image = augment(train.images[batch], aug_generator)  # (B, 1, 28, 28)
        if rt.device.type == "cuda":
            image = image.contiguous(memory_format=torch.channels_last)
        label = train.labels[batch]
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            digit_logits, sum_logits = model(image, number)
        loss = pair_loss(digit_logits, sum_logits, label, number, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model.module if isinstance(model, DistributedDataParallel) else model)
        total += loss.detach()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    mean = total / max(steps, 1)
    if rt.world_size > 1:
        dist.all_reduce(mean, op=dist.ReduceOp.AVG)
    return float(mean)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_data(cfg: TrainConfig, device: torch.device) -> tuple[Split, Split, dict[str, str]]:
    folder = ensure_mnist(cfg.data_dir, download=cfg.download, verify=cfg.verify_checksums)
    train, test = load_split(folder, "train"), load_split(folder, "t10k")
    if cfg.smoke:
        train, test = train.head(SMOKE_TRAIN_IMAGES), test.head(SMOKE_TEST_IMAGES)
    return train.to(device), test.to(device), dataset_checksums(folder)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def build_card(
    cfg: TrainConfig,
    eager: DigitSumNet,
    metrics: Metrics,
    history: list[dict[str, float]],
    checksums: dict[str, str],
    train_seconds: float,
    rt: Runtime,
    argv: list[str],
) -> dict[str, Any]:
    device_name = (
        torch.cuda.get_device_name(rt.device)
        if rt.device.type == "cuda"
        else f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    return {
        "name": "digitsum",
        "version": __version__,  # the project's, from the source: no install needed
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "contract": {
            "forward": "forward(image, number) -> (digit_logits, sum_logits)",
            "image": "float32 (B, 1, 28, 28) in [0, 1], white digit on black (MNIST)",
            "number": "int64 (B,) in 0..9",
            "digit_logits": "(B, 10)",
            "sum_logits": "(B, 19): the sum head's own prediction of digit + number",
            "normalisation": "inside the module",
        },
        "model": eager.config.to_dict(),
        "parameters": export.count_parameters(eager),
        "mflops_per_image": round(export.mflops_per_image(eager), 3),
        "training": {
            "config": cfg.to_dict(),
            "command": "python -m training " + shlex.join(argv),
            "processes": rt.world_size,
            "device": device_name,
            "seconds": round(train_seconds, 1),
            "median_epoch_seconds": round(
                statistics.median(h["seconds"] for h in history) if history else 0.0, 1
            ),
            "history": history,
        },
        "dataset": {
            "name": "MNIST",
            "license": "CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J.C. Burges)",
            "files": checksums,
            "train_images": 60_000 if not cfg.smoke else SMOKE_TRAIN_IMAGES,
        },
        "metrics": metrics.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(argv)
    if cfg.smoke:
        cfg = replace(
            cfg,
            epochs=min(cfg.epochs, SMOKE_MAX_EPOCHS),
            batch_size=min(cfg.batch_size, 64),
            ema_decay=min(cfg.ema_decay, 0.9),
        )
    try:
        rt = setup_runtime(cfg)
        train, test, checksums = load_data(cfg, rt.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return run(cfg, rt, train, test, checksums, argv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(
    cfg: TrainConfig,
    rt: Runtime,
    train: Split,
    test: Split,
    checksums: dict[str, str],
    argv: list[str],
) -> int:
    torch.manual_seed(cfg.seed)
    model = DigitSumNet(cfg.model).to(rt.device)
    if rt.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = (len(train) // rt.world_size) // cfg.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.lr,
        epochs=cfg.epochs,
        steps_per_epoch=max(steps_per_epoch, 1),
        pct_start=0.2,
    )
    history: list[dict[str, float]] = []
    first_epoch, train_seconds = 1, 0.0
    if cfg.resume and cfg.state.exists():
        state = torch.load(cfg.state, map_location=rt.device, weights_only=False)
        changed = [k for k in RESUME_MUST_MATCH if state["config"][k] != cfg.to_dict()[k]]
        if changed:
            print(
                f"error: cannot resume {cfg.state}: it was started with different "
                f"{', '.join('--' + k.replace('_', '-') for k in changed)}",
                file=sys.stderr,
            )
            return 2
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, train_seconds = state["history"], state["train_seconds"]
        first_epoch = state["epoch"] + 1
        if rt.is_main:
            print(f"resumed from {cfg.state} after epoch {state['epoch']}", flush=True)
    net: torch.nn.Module = model
    if rt.world_size > 1:
        net = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    if rt.is_main:
        print(
            f"training on {rt.device} x{rt.world_size}: {len(train):,} images, "
            f"{export.count_parameters(model):,} parameters",
            flush=True,
        )

    metrics: Metrics | None = None
    for epoch in range(first_epoch, cfg.epochs + 1):
        synchronize(rt.device)
        start = time.perf_counter()
        loss = train_one_epoch(net, ema, optimizer, scheduler, train, cfg, epoch, rt)
        synchronize(rt.device)
        seconds = time.perf_counter() - start
        train_seconds += seconds
        if rt.is_main:
            ema.eval()
            metrics = evaluate_pairs(cast(DigitSumNet, ema.module), test, rt.device)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": round(loss, 5),
                    "seconds": round(seconds, 2),
                    "digit_accuracy": metrics.digit_accuracy,
                    "sum_accuracy": metrics.sum_accuracy,
                    "consistency": metrics.consistency,
                }
            )
            print(
                f"epoch {epoch:3d}/{cfg.epochs}  loss {loss:.4f}  "
                f"digit {metrics.digit_accuracy:.2%}  sum {metrics.sum_accuracy:.2%}  "
                f"consistency {metrics.consistency:.2%}  {seconds:.1f}s",
                flush=True,
            )
            save_state(
                cfg.state,
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "train_seconds": train_seconds,
                    "config": cfg.to_dict(),
                },
            )
        if rt.world_size > 1:
            dist.barrier()

    if not rt.is_main:
        return 0
    if metrics is None:  # resumed a finished run: score it again for the card
        ema.eval()
        metrics = evaluate_pairs(cast(DigitSumNet, ema.module), test, rt.device)
    final = DigitSumNet(cfg.model)
    final.load_state_dict({k: v.cpu() for k, v in ema.module.state_dict().items()})
    final.eval()
    card = build_card(cfg, final, metrics, history, checksums, train_seconds, rt, argv)
    scripted = export.script_model(final)
    card["cpu_images_per_second"] = {
        str(bs): round(export.images_per_second(scripted, bs)) for bs in (1, 256)
    }
    path = export.save_checkpoint(scripted, card, cfg.out)
    drift = export.check_round_trip(final, path)
    if drift > 1e-4:
        print(
            f"error: reloaded {path} differs from the trained model by {drift:.2e}", file=sys.stderr
        )
        return 1
    plots.save_learning_curves(history, cfg.out / "learning_curves.png")
    plots.save_confusion_matrix(metrics.confusion, cfg.out / "confusion_matrix.png")
    print(metrics.table())
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) and {cfg.out / export.CARD_FILE}")
    print(
        json.dumps(
            {
                "cpu_images_per_second": card["cpu_images_per_second"],
                "parameters": card["parameters"],
                "mflops": card["mflops_per_image"],
            }
        )
    )
    return 0
