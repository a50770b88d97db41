"""Export: script the trained model, embed its model card, save atomically, reload and compare.

The file needs no project code to run: `torch.jit.load(path, map_location=device)`.
Its card travels inside it as the extra file `metadata.json` and beside it as `digitsum.json`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from training.atomic import atomic_write, atomic_write_text
from training.model import DigitSumNet

CARD_EXTRA_FILE = "metadata.json"
MODEL_FILE = "digitsum.pt"
CARD_FILE = "digitsum.json"


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mflops_per_image(model: DigitSumNet) -> float:
    """Forward FLOPs of one (image, number) pair, counted by torch's own FLOP counter."""
    image, number = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(image, number)
    return counter.get_total_flops() / 1e6


@torch.inference_mode()
def images_per_second(
    model: torch.jit.ScriptModule, batch_size: int, seconds: float = 2.0
) -> float:
    """CPU throughput of the scripted model at one batch size (median of 5 timed slices)."""
    image = torch.rand(batch_size, 1, 28, 28)
    number = torch.randint(0, 10, (batch_size,))
    for _ in range(10):
        model(image, number)
    rates = []
    for _ in range(5):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            model(image, number)
            calls += 1
        rates.append(calls * batch_size / elapsed)
    return sorted(rates)[2]


def script_model(model: DigitSumNet) -> torch.jit.ScriptModule:
    """An eval-mode CPU TorchScript copy of `model` (weights copied, the original untouched)."""
    eager = DigitSumNet(model.config).eval()
    eager.load_state_dict(model.state_dict())
    scripted: torch.jit.ScriptModule = torch.jit.script(eager)
    return scripted


def save_checkpoint(scripted: torch.jit.ScriptModule, card: dict[str, Any], out_dir: Path) -> Path:
    """Write digitsum.pt (card inside) and digitsum.json atomically; return the .pt path."""
    path = out_dir / MODEL_FILE
    extra = {CARD_EXTRA_FILE: json.dumps(card, indent=2, sort_keys=True)}
    atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))
    file_card = dict(
        card, file={"name": MODEL_FILE, "sha256": sha256_of(path), "bytes": path.stat().st_size}
    )
    atomic_write_text(out_dir / CARD_FILE, json.dumps(file_card, indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """torch.jit.load plus the embedded card, as any user of the file would do it."""
    extra = {CARD_EXTRA_FILE: ""}
    module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    return module.eval(), json.loads(extra[CARD_EXTRA_FILE])


def check_round_trip(eager: DigitSumNet, path: Path, batch_size: int = 256) -> float:
    """Largest absolute difference between the eager model and the reloaded file's logits."""
    reloaded, _ = load_checkpoint(path)
    generator = torch.Generator().manual_seed(1234)
    image = torch.rand(batch_size, 1, 28, 28, generator=generator)
    number = torch.randint(0, 10, (batch_size,), generator=generator)
    reference = DigitSumNet(eager.config).eval()
    reference.load_state_dict(eager.state_dict())
    with torch.inference_mode():
        expected = reference(image, number)
        actual = reloaded(image, number)
    return max(float((e - a).abs().max()) for e, a in zip(expected, actual, strict=True))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
