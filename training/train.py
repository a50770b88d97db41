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
from app.config import available_cpus
from app.devices import DeviceError, resolve_device
from training import calibrate, export, plots
from training.atomic import atomic_write
from training.config import TrainConfig, parse_args
from training.data import (
    DataError,
    Split,
    augment,
    dataset_checksums,
    ensure_mnist,
    load_split,
    roughen,
)
from training.evaluate import (
    Metrics,
    blended_inconsistency,
    evaluate_pairs,
    score_glyphs,
    score_validation,
)
from training.model import NUM_SUMS, DigitSumNet
from training.pages import cached_pages
from training.synthetic import GlyphPool, cached_pool

SMOKE_TRAIN_IMAGES = 512
SMOKE_TEST_IMAGES = 200
SMOKE_VAL_IMAGES = 100
SMOKE_GLYPHS = 200  # digits; half as many negatives
SMOKE_MAX_EPOCHS = 2
SMOKE_SETTLE_STEPS = 5
VAL_GLYPH_DIGITS = 3_000  # synthetic validation glyphs: train sources, another seed
VAL_GLYPH_NEGATIVES = 2_000
VAL_PAGE_PHOTOS = 4_000  # blank-page photos of another seed, for the validation page negatives
SMOKE_PAGE_PHOTOS = 20
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
    """Cross-entropy of both heads plus the sum head's agreement with the digit head (digits
    only: a non-digit has neither a digit nor a sum to learn)."""
    digit_logits, sum_logits = digit_logits.float(), sum_logits.float()
    loss = F.cross_entropy(digit_logits, label, label_smoothing=cfg.label_smoothing)
    loss = loss + F.cross_entropy(sum_logits, label + number, label_smoothing=cfg.label_smoothing)
    if cfg.agreement_weight:
        target = sum_agreement_target(digit_logits, number)
        loss = loss + cfg.agreement_weight * F.cross_entropy(sum_logits, target)
    return loss


def distill_loss(
    digit_logits: torch.Tensor,
    not_digit_logit: torch.Tensor,
    teacher_digit: torch.Tensor,
    teacher_not_digit: torch.Tensor,
    is_digit: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """The student's distance from the teacher: the digit distributions at `temperature`
    (digits only, scaled by temperature squared as in Hinton et al.) and the not-digit
    probability (every image)."""
    t = temperature
    digit = F.kl_div(
        (digit_logits[is_digit].float() / t).log_softmax(1),
        (teacher_digit[is_digit].float() / t).log_softmax(1),
        reduction="batchmean",
        log_target=True,
    )
    not_digit = F.binary_cross_entropy_with_logits(
        not_digit_logit.float(), teacher_not_digit.float().sigmoid()
    )
    return digit * t * t + not_digit


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


def warp_strength(rows: int, mnist: int, strength: float) -> torch.Tensor:
    """augment()'s strength per image (rows,) for a batch whose first `mnist` rows are MNIST's:
    those at `strength`, the synthetic ones at 1. Its random draws do not depend on it, so at 1
    this replays the batches of every run before --mnist-warp."""
    per_row = torch.ones(rows)
    per_row[:mnist] = strength
    return per_row


def roughen_batch(
    warped: torch.Tensor, mnist: int, share: float, generator: torch.Generator
) -> torch.Tensor:
    """`warped` (B, 1, 28, 28) through roughen(), except that of its first `mnist` rows (the
    MNIST images) only about `share` are: the rest keep MNIST's own look."""
    image = roughen(warped, generator)
    if share < 1:  # drawn only then, so that runs at 1 replay the batches of earlier runs
        smooth = (torch.rand(mnist, generator=generator) >= share).to(warped.device)
        image[:mnist][smooth] = warped[:mnist][smooth]
    return image


def train_one_epoch(
    model: torch.nn.Module,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: Split,
    glyphs: GlyphPool,
    pages: GlyphPool,
    cfg: TrainConfig,
    epoch: int,
    rt: Runtime,
    teacher: torch.jit.ScriptModule | None = None,
) -> float:
    """One pass over this process's MNIST shard, each step's batch topped up with synthetic
    digits and non-digits drawn from `glyphs`, and page negatives from `pages`; returns the
    mean training loss."""
    model.train()
    indices, numbers = epoch_batches(len(train), cfg, epoch, rt)
    aug_generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 131 + rt.rank)
    digit_pool, negative_pool = glyphs.digits, glyphs.negatives
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
        images, labels = [train.images[batch]], [train.labels[batch]]
        for pool, count in (
            (digit_pool, cfg.glyph_batch),
            (negative_pool, cfg.negative_batch),
            (pages, cfg.page_batch),
        ):
            if len(pool) and count:
                pick = torch.randint(0, len(pool), (count,), generator=aug_generator)
                images.append(pool.images[pick.to(pool.images.device)])
                labels.append(pool.labels[pick.to(pool.labels.device)])
        stacked = torch.cat(images)  # (B', 1, 28, 28), MNIST's rows first
        strength = warp_strength(len(stacked), len(batch), cfg.mnist_warp)
        warped = augment(stacked, aug_generator, strength)
        image = roughen_batch(warped, len(batch), cfg.mnist_roughen, aug_generator)
        label = torch.cat(labels)  # (B',) digits, or NOT_A_DIGIT (-1)
        extra = torch.randint(0, 10, (len(label) - len(batch),), generator=aug_generator)
        number = torch.cat((numbers[step * cfg.batch_size : (step + 1) * cfg.batch_size], extra))
        number = number.to(rt.device)
        if rt.device.type == "cuda":
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            digit_logits, sum_logits, not_digit_logit = model(image, number)
        is_digit = label >= 0
        loss = pair_loss(
            digit_logits[is_digit], sum_logits[is_digit], label[is_digit], number[is_digit], cfg
        )
        if cfg.not_digit_weight:
            target = (~is_digit).float()
            loss = loss + cfg.not_digit_weight * F.binary_cross_entropy_with_logits(
                not_digit_logit.float(), target
            )
        if teacher is not None:
            with torch.no_grad():
                teacher_digit, _, teacher_not_digit = teacher(image, number)
                # back to the teacher's raw logits: its calibration is not what it teaches
                teacher_digit = teacher_digit * teacher.digit_temperature
            loss = loss + cfg.distill_weight * distill_loss(
                digit_logits,
                not_digit_logit,
                teacher_digit,
                teacher_not_digit,
                is_digit,
                cfg.distill_temperature,
            )
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


@dataclass
class Data:
    """Everything a run reads: MNIST's train split less the validation slice, that slice, the
    test split (reported, never used to choose anything), and the synthetic glyph pools."""

    train: Split
    val: Split
    test: Split
    glyphs: GlyphPool
    val_glyphs: GlyphPool
    pages: GlyphPool  # page negatives (training/pages.py), empty unless --page-photos
    val_pages: GlyphPool
    checksums: dict[str, str]


def load_data(cfg: TrainConfig, device: torch.device) -> Data:
    folder = ensure_mnist(cfg.data_dir, download=cfg.download, verify=cfg.verify_checksums)
    train, test = load_split(folder, "train"), load_split(folder, "t10k")
    # A final fit trains on the validation slice too: it has none.
    val_images = 0 if cfg.final_fit is not None else cfg.val_images
    digits, negatives = cfg.glyph_digits, cfg.glyph_negatives
    val_digits, val_negatives = VAL_GLYPH_DIGITS, VAL_GLYPH_NEGATIVES
    page_photos, val_page_photos = cfg.page_photos, VAL_PAGE_PHOTOS if cfg.page_photos else 0
    drawings, drawn_negatives = cfg.drawing_digits, cfg.drawing_negatives
    if cfg.smoke:
        drawings, drawn_negatives = min(drawings, SMOKE_GLYPHS // 2), min(drawn_negatives, 20)
        page_photos, val_page_photos = min(page_photos, SMOKE_PAGE_PHOTOS), 0
        train, test = train.head(SMOKE_TRAIN_IMAGES), test.head(SMOKE_TEST_IMAGES)
        val_images = min(val_images, SMOKE_VAL_IMAGES)
        digits, negatives = min(digits, SMOKE_GLYPHS), min(negatives, SMOKE_GLYPHS // 2)
        val_digits, val_negatives = SMOKE_GLYPHS // 2, SMOKE_GLYPHS // 4
    # The validation glyphs hold drawings in the share the training pool does.
    val_drawings = round(drawings * val_digits / max(digits, 1))
    val_drawn_negatives = round(drawn_negatives * val_negatives / max(negatives, 1))
    train, val = train.split_off(val_images, cfg.seed)
    cache = cfg.state.parent
    try:
        glyphs = cached_pool(cache, "train", digits, negatives, cfg.seed, drawings, drawn_negatives)
        val_glyphs = cached_pool(
            cache,
            "train",
            val_digits,
            val_negatives,
            cfg.seed + 1,
            val_drawings,
            val_drawn_negatives,
        )
        workers = min(available_cpus(), cfg.threads or available_cpus())  # mining processes
        pages = cached_pages(cache, page_photos, cfg.seed, workers)
        val_pages = cached_pages(cache, val_page_photos, cfg.seed + 1, workers)
    except (OSError, RuntimeError) as exc:  # a font missing, an unwritable cache
        raise DataError(f"cannot render the synthetic glyphs: {exc}") from exc
    return Data(
        train.to(device),
        val.to(device),
        test.to(device),
        glyphs.to(device),
        val_glyphs.to(device),
        pages.to(device),
        val_pages.to(device),
        dataset_checksums(folder),
    )


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def build_card(
    cfg: TrainConfig,
    eager: DigitSumNet,
    metrics: Metrics,
    history: list[dict[str, float]],
    data: Data,
    train_seconds: float,
    rt: Runtime,
    argv: list[str],
    selection: dict[str, Any],
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
            "forward": "forward(image, number) -> (digit_logits, sum_logits, not_digit_logit)",
            "image": "float32 (B, 1, 28, 28) in [0, 1], white digit on black (MNIST)",
            "number": "int64 (B,) in 0..9",
            "digit_logits": "(B, 10), calibrated: softmax is the digit's probability",
            "sum_logits": "(B, 19): the sum head's own prediction of digit + number, calibrated",
            "not_digit_logit": "(B,): sigmoid is the probability that there is no digit; "
            "refuse at no_digit.threshold",
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
            "files": data.checksums,
            "train_images": len(data.train),
            "validation_images": len(data.val),
            "synthetic": {
                "sources": "training/glyphs.py, train split only",
                "digits": len(data.glyphs.digits),
                "negatives": len(data.glyphs.negatives),
                "validation_digits": len(data.val_glyphs.digits),
                "validation_negatives": len(data.val_glyphs.negatives),
                "page_negatives": len(data.pages),
                "validation_page_negatives": len(data.val_pages),
            },
        },
        "selection": selection,
        "calibration": {
            "method": "temperature scaling on the validation slice (training/calibrate.py)",
            "digit_temperature": float(eager.digit_temperature),
            "sum_temperature": float(eager.sum_temperature),
        },
        "no_digit": {
            "threshold": metrics.not_digit_threshold,
            "chosen_on": "validation: refuses at most "
            f"{calibrate.MAX_MNIST_REFUSED:.2%} of MNIST and "
            f"{calibrate.MAX_SYNTHETIC_REFUSED:.0%} of synthetic digits",
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
        twin = load_twin(cfg) if cfg.final_fit is not None else None
        rt = setup_runtime(cfg)
        data = load_data(cfg, rt.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return run(cfg, rt, data, argv, twin)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# What a final fit may change from its twin's training config; everything else is the recipe
# (data, schedule, model, teacher, seed), which must be the twin's, so that the twin's
# calibration and threshold, and its validation figures, speak for the final fit.
FINAL_FIT_MAY_DIFFER = frozenset(
    (
        "data_dir",
        "out",
        "state",
        "resume",
        "threads",
        "device",
        "download",
        "verify_checksums",
        "final_fit",
        "val_images",
    )
)


@dataclass(frozen=True)
class Twin:
    """The validation-selected run a final fit repeats on all of MNIST's training split: what
    is carried over from it, and where from."""

    path: Path
    sha256: str
    selected_epoch: int
    digit_temperature: float
    sum_temperature: float
    threshold: float


def load_twin(cfg: TrainConfig) -> Twin:
    """The --final-fit checkpoint's card, checked against this run's recipe; raises DataError
    naming what differs."""
    assert cfg.final_fit is not None
    try:
        _, card = export.load_checkpoint(cfg.final_fit)
        theirs = card["training"]["config"]
        twin = Twin(
            cfg.final_fit,
            export.sha256_of(cfg.final_fit),
            int(card["selection"]["epoch"]),
            float(card["calibration"]["digit_temperature"]),
            float(card["calibration"]["sum_temperature"]),
            float(card["no_digit"]["threshold"]),
        )
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"--final-fit {cfg.final_fit}: not a trainer's checkpoint: {exc}") from exc
    if theirs.get("final_fit") is not None:
        raise DataError(f"--final-fit {cfg.final_fit} is itself a final fit: name its twin")
    ours = json.loads(json.dumps(cfg.to_dict()))  # tuples as the card's lists
    # A flag added since the twin was trained is missing from its card: it ran as the flag's
    # default does (a new flag's default keeps what earlier runs did).
    theirs = {**json.loads(json.dumps(TrainConfig().to_dict())), **theirs}
    differ = [
        key
        for key in sorted(set(ours) | set(theirs))
        if key not in FINAL_FIT_MAY_DIFFER and ours.get(key) != theirs.get(key)
    ]
    if differ:
        raise DataError(
            f"--final-fit {cfg.final_fit} was trained with another recipe: "
            + ", ".join(f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        )
    return twin


SETTLE_BATCH = 8192  # (belief, number) pairs per step of the table's refit
SETTLE_LR = 0.01


def settle_addition_table(model: DigitSumNet, data: Data, cfg: TrainConfig) -> DigitSumNet:
    """The trained model (eval mode, CPU) with its addition table refit alone, at a sharpened
    belief (cfg.settle_sharpness).

    Trained jointly with the trunk, the table reads the digit head's plain softmax, where its
    gradients help shape the trunk. Its rows come out a little uneven, and on the rare image
    whose digit belief is split almost evenly between two digits, the unevenness can pick the
    other digit's sum. Sharpening the belief the table reads multiplies that margin; the table is
    then refit to it, with the trunk and the digit and not-digit heads frozen (their answers do
    not change), on the clean training digits (MNIST and synthetic) paired with random numbers.
    The loss is the agreement term alone: the sum head learns to say what the digit head implies.
    """
    settled = DigitSumNet(replace(model.config, belief_sharpness=cfg.settle_sharpness))
    settled.load_state_dict(model.state_dict())
    settled.eval()
    chunks = []
    with torch.no_grad():
        for split in (data.train, data.glyphs.digits):
            for start in range(0, len(split), 2048):
                images = split.images[start : start + 2048].cpu()
                chunks.append(settled.digit_head(settled.embed(images)))
    digit_logits = torch.cat(chunks)  # (N, 10), fixed from here on
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam([settled.addition_table], lr=SETTLE_LR)
    steps = min(cfg.settle_steps, SMOKE_SETTLE_STEPS) if cfg.smoke else cfg.settle_steps
    for _ in range(steps):
        pick = torch.randint(0, len(digit_logits), (SETTLE_BATCH,), generator=generator)
        number = torch.randint(0, 10, (SETTLE_BATCH,), generator=generator)
        logits = digit_logits[pick]
        # the table read exactly as the exported model reads it (sharpened belief)
        sum_logits = settled.read_table(logits, number)
        loss = F.cross_entropy(sum_logits, sum_agreement_target(logits, number))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return settled


@torch.inference_mode()
def calibrate_on_validation(model: DigitSumNet, data: Data, device: torch.device) -> float:
    """Fit both heads' temperatures and choose the not-digit threshold, on validation data only;
    sets the temperatures in `model` (eval mode, on `device`) and returns the threshold."""
    model.digit_temperature.fill_(1.0)
    model.sum_temperature.fill_(1.0)
    digit_logits, sum_logits, digit_labels, sum_labels = [], [], [], []
    refusal: dict[str, list[torch.Tensor]] = {"mnist": [], "glyphs": []}
    generator = torch.Generator().manual_seed(4242)  # the numbers paired with validation images
    for name, split in (("mnist", data.val), ("glyphs", data.val_glyphs.digits)):
        for start in range(0, len(split), 1000):
            images = split.images[start : start + 1000].to(device)
            labels = split.labels[start : start + 1000].to(device)
            number = torch.randint(0, 10, labels.shape, generator=generator).to(device)
            features = model.embed(images)
            d, s_ = model.heads(features, number)
            digit_logits.append(d.float().cpu())
            sum_logits.append(s_.float().cpu())
            digit_labels.append(labels.cpu())
            sum_labels.append((labels + number).cpu())
            refusal[name].append(model.not_digit(features).sigmoid().float().cpu())
    model.digit_temperature.fill_(
        calibrate.fit_temperature(torch.cat(digit_logits), torch.cat(digit_labels))
    )
    model.sum_temperature.fill_(
        calibrate.fit_temperature(torch.cat(sum_logits), torch.cat(sum_labels))
    )
    return calibrate.not_digit_threshold(torch.cat(refusal["mnist"]), torch.cat(refusal["glyphs"]))


def carry_calibration(model: DigitSumNet, twin: Twin) -> float:
    """The final fit's calibration, by rule rather than by fitting: the twin's two temperatures
    (set in `model`) and its no-digit threshold (returned). The twin is the same recipe and seed
    trained on the split less the validation slice, calibrated on that slice; the final fit has
    no unseen MNIST images left to fit on. The MNIST test set reports how well this carries."""
    model.digit_temperature.fill_(twin.digit_temperature)
    model.sum_temperature.fill_(twin.sum_temperature)
    return twin.threshold


@torch.inference_mode()
def final_fit_selection(
    model: DigitSumNet, data: Data, twin: Twin, threshold: float, epoch: int
) -> dict[str, Any]:
    """The card's account of a final fit: the rule, the twin, and what the carried threshold
    refuses of the synthetic validation digits, which the final fit did not see (a check, not
    a choice)."""
    digits = data.val_glyphs.digits
    refused = 0
    for start in range(0, len(digits), 1000):
        features = model.embed(digits.images[start : start + 1000].cpu())
        refused += int((model.not_digit(features).sigmoid() >= threshold).sum())
    return {
        "rule": "final fit: all of MNIST's training split, the recipe and --epochs of the twin "
        "(chosen on its validation slice), the last epoch's weight average exported; "
        "temperatures and no-digit threshold carried over from the twin",
        "epoch": epoch,
        "twin": {
            "path": str(twin.path),
            "sha256": twin.sha256,
            "selected_epoch": twin.selected_epoch,
        },
        "synthetic_validation_digits_refused_at_carried_threshold": round(
            refused / max(len(digits), 1), 6
        ),
    }


def run(
    cfg: TrainConfig, rt: Runtime, data: Data, argv: list[str], twin: Twin | None = None
) -> int:
    train = data.train
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
    teacher = None
    if cfg.teacher is not None:
        teacher, _ = export.load_checkpoint(cfg.teacher, rt.device)
    history: list[dict[str, float]] = []
    first_epoch, train_seconds = 1, 0.0
    best: dict[str, Any] = {"score": -float("inf"), "epoch": 0, "ema": None}
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
        best = state["best"]
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
            f"training on {rt.device} x{rt.world_size}: {len(train):,} MNIST images "
            f"(+{len(data.glyphs.digits):,} synthetic digits, {len(data.glyphs.negatives):,} "
            f"non-digits, {len(data.pages):,} page negatives), "
            f"{export.count_parameters(model):,} parameters; "
            f"validation: {len(data.val):,} MNIST images, {len(data.val_glyphs):,} glyphs",
            flush=True,
        )

    for epoch in range(first_epoch, cfg.epochs + 1):
        synchronize(rt.device)
        start = time.perf_counter()
        loss = train_one_epoch(
            net, ema, optimizer, scheduler, train, data.glyphs, data.pages, cfg, epoch, rt, teacher
        )
        synchronize(rt.device)
        seconds = time.perf_counter() - start
        train_seconds += seconds
        if rt.is_main and twin is not None:
            # A final fit has no MNIST slice left to choose on: the last epoch is exported.
            ema.eval()
            glyph_scores = score_glyphs(cast(DigitSumNet, ema.module), data.val_glyphs, rt.device)
            history.append(
                {"epoch": epoch, "train_loss": round(loss, 5), "seconds": round(seconds, 2)}
                | glyph_scores
            )
            best = {
                "score": 0.0,
                "epoch": epoch,
                "ema": {k: v.detach().cpu().clone() for k, v in ema.module.state_dict().items()},
            }
            print(
                f"epoch {epoch:3d}/{cfg.epochs}  loss {loss:.4f}  (final fit) val glyphs "
                f"{glyph_scores['val_glyph_digit_accuracy']:.2%}  non-digits refused "
                f"{glyph_scores['val_glyph_negatives_refused']:.2%}  {seconds:.1f}s",
                flush=True,
            )
        elif rt.is_main:
            ema.eval()
            scores = score_validation(
                cast(DigitSumNet, ema.module), data.val, data.val_glyphs, rt.device, data.val_pages
            )
            history.append(
                {"epoch": epoch, "train_loss": round(loss, 5), "seconds": round(seconds, 2)}
                | scores.summary()
            )
            if scores.score >= best["score"]:
                best = {
                    "score": scores.score,
                    "epoch": epoch,
                    "ema": {
                        k: v.detach().cpu().clone() for k, v in ema.module.state_dict().items()
                    },
                }
            print(
                f"epoch {epoch:3d}/{cfg.epochs}  loss {loss:.4f}  val: digit "
                f"{scores.mnist.digit_accuracy:.2%}  sum {scores.mnist.sum_accuracy:.2%}  "
                f"glyphs {scores.glyph_digit_accuracy:.2%}  non-digits refused "
                f"{scores.glyph_negatives_refused:.2%}  "
                + (
                    ""
                    if scores.page_negatives_refused is None
                    else f"pages refused {scores.page_negatives_refused:.2%}  "
                )
                + f"{seconds:.1f}s",
                flush=True,
            )
        if rt.is_main:
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
                    "best": best,
                    "config": cfg.to_dict(),
                },
            )
        if rt.world_size > 1:
            dist.barrier()

    if not rt.is_main:
        return 0
    final = DigitSumNet(cfg.model)
    final.load_state_dict(best["ema"])
    final.eval()
    if cfg.settle_steps:
        final = settle_addition_table(final, data, cfg)
    if twin is None:
        threshold = calibrate_on_validation(final, data, torch.device("cpu"))
        selection: dict[str, Any] = {
            "rule": "the epoch whose weight average scored best on the validation slice "
            "(training/evaluate.py ValidationScores.score)",
            "epoch": best["epoch"],
        }
        blend_split, blend_on = data.val, "MNIST validation slice"
    else:
        threshold = carry_calibration(final, twin)
        selection = final_fit_selection(final, data, twin, threshold, best["epoch"])
        # The MNIST slice was trained on; the synthetic validation digits were not.
        blend_split = Split(
            data.val_glyphs.digits.images.cpu(), data.val_glyphs.digits.labels.cpu()
        )
        blend_on = "synthetic validation digits (a final fit trains on the MNIST slice)"
    metrics = evaluate_pairs(final, data.test, torch.device("cpu"), not_digit_threshold=threshold)
    card = build_card(cfg, final, metrics, history, data, train_seconds, rt, argv, selection)
    if twin is not None:
        card["calibration"]["method"] = (
            f"carried over from the final fit's twin {twin.path} (sha256 {twin.sha256[:12]}), "
            "whose temperatures were fitted on its validation slice"
        )
        card["no_digit"]["chosen_on"] = (
            f"carried over from the twin {twin.path}, where it was chosen on validation: "
            + card["no_digit"]["chosen_on"]
        )
    inconsistent, pairs = blended_inconsistency(final, blend_split)
    card["settle"] = {
        "steps": cfg.settle_steps,
        "belief_sharpness": final.belief_sharpness,
        "validation_blends_inconsistent_pairs": inconsistent,
        "validation_blend_pairs": pairs,
        "validation_blends_of": blend_on,
    }
    print(f"sum != digit + number on {inconsistent:,} of {pairs:,} blended validation pairs")
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
                "selected_epoch": best["epoch"],
            }
        )
    )
    return 0
