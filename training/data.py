"""MNIST held whole on the training device, the random 0..9 addend, and batched augmentation.

Reads the four original IDX `.gz` files from `<data-dir>/MNIST/raw/` (torchvision's layout),
checks their MD5s, and never writes into that folder unless it has to download.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# torchvision's own list (torchvision.datasets.MNIST.resources), repeated here so that a
# checksum error can name the file without importing torchvision first.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


class DataError(RuntimeError):
    """The MNIST files are missing, unreadable or wrong; the message says what to do."""


@dataclass
class Split:
    """One MNIST split on a device: images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n])

    def split_off(self, n: int, seed: int) -> tuple[Split, Split]:
        """(the rest, n images drawn at random): the validation slice that model selection,
        calibration and thresholds use, so the test split only ever reports."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        rest, held = order[n:].sort().values, order[:n].sort().values
        return Split(self.images[rest], self.labels[rest]), Split(
            self.images[held], self.labels[held]
        )


def raw_dir(data_dir: Path) -> Path:
    return data_dir / "MNIST" / "raw"


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def read_idx(path: Path) -> torch.Tensor:
    """Parse one gzip-compressed IDX file (uint8 data) into a tensor of its declared shape."""
    try:
        data = gzip.decompress(path.read_bytes())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing") from exc
    except PermissionError as exc:
        raise DataError(f"cannot read {path}: permission denied") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from exc
    if len(data) < 4:
        raise DataError(f"{path}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: not an IDX file of uint8 (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(f"{path}: header says {dims} but holds {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def ensure_mnist(
    data_dir: Path,
    *,
    splits: tuple[str, ...] = ("train", "t10k"),
    download: bool = True,
    verify: bool = True,
) -> Path:
    """Make sure the files of `splits` are under `<data_dir>/MNIST/raw/`, downloading if missing.

    Returns that folder. Raises DataError with a message a person can act on.
    """
    folder = raw_dir(data_dir)
    wanted = {n: md5 for n, md5 in MNIST_FILES.items() if n.split("-")[0] in splits}
    missing = [name for name in wanted if not (folder / name).exists()]
    if missing and download:
        _download(data_dir)
        missing = [name for name in wanted if not (folder / name).exists()]
    if missing:
        raise DataError(
            f"MNIST files missing in {folder}: {', '.join(missing)}. "
            "Pass --data-dir pointing at a folder holding MNIST/raw/*.gz, "
            "or allow the download from the network."
        )
    for name, expected in wanted.items():
        path = folder / name
        try:
            actual = md5_of(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from exc
        if verify and actual != expected:
            raise DataError(
                f"checksum mismatch for {path}: MD5 {actual}, expected {expected}. "
                "The file is corrupt or not the original MNIST; delete it to download again."
            )
    return folder


def _download(data_dir: Path) -> None:
    """Fetch the missing files with torchvision's own MNIST download (mirrors and MD5s included)."""
    from torchvision.datasets import MNIST  # the only torchvision use; imported when needed

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        MNIST(root=str(data_dir), train=True, download=True)
    except PermissionError as exc:
        raise DataError(
            f"MNIST is missing and {data_dir} is not writable ({exc.strerror}); "
            "pass --data-dir pointing at a writable folder or at one that already holds MNIST/raw/"
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise DataError(
            f"MNIST is missing in {raw_dir(data_dir)} and the download failed ({exc}). "
            "Without network access, copy the four *.gz files of MNIST into that folder "
            "(or pass --data-dir pointing at a folder that has MNIST/raw/)."
        ) from exc


def load_split(folder: Path, split: str) -> Split:
    """split is 'train' or 't10k'. Images become float32 in [0, 1], white digit on black."""
    images = read_idx(folder / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{split}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(
            f"{folder}: {split} images {tuple(images.shape)} / labels {tuple(labels.shape)}"
        )
    return Split(images.unsqueeze(1).float().div_(255.0), labels.long())


def dataset_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of each file, for the model card."""
    out: dict[str, str] = {}
    for name in MNIST_FILES:
        data = (folder / name).read_bytes()
        out[name] = "sha256:" + hashlib.sha256(data).hexdigest()
    return out


def augment(
    images: torch.Tensor, generator: torch.Generator, strength: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Random affine and elastic warps, batched on the images' device: (B,1,28,28) -> same.

    Rotation up to 12 degrees, scale 0.85-1.1, shear up to 0.3 (slanted writing) and shifts up
    to 2.5 px, plus a smooth elastic displacement of up to about 1.5 px (Simard et al.'s
    distortion, the wobble of a hand), all in one resampling, each scaled by `strength` (one
    for the batch, or (B,) per image). The random draws happen on the CPU generator, and do not
    depend on `strength`, so that runs are seeded the same on any device and at any strength.
    """
    b = images.shape[0]
    k = torch.as_tensor(strength, dtype=images.dtype).to(images.device).expand(b)  # (B,)
    r = torch.rand((b, 5), generator=generator).to(images.device) * 2 - 1  # (B, 5) in [-1, 1]
    angle = r[:, 0] * math.radians(12) * k
    scale = 1 + (r[:, 1] * 0.125 - 0.025) * k
    shear = r[:, 2] * 0.3 * k
    shift = r[:, 3:] * (2.5 / 14) * k[:, None]  # grid units: 14 px = 1.0
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, shift[:, 0]], dim=1),
            torch.stack([sin, cos + shear * sin, shift[:, 1]], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, 28, 28, 2)
    coarse = torch.randn((b, 2, 4, 4), generator=generator).to(images.device)
    elastic = F.interpolate(coarse, size=images.shape[-2:], mode="bicubic", align_corners=False)
    wobble = elastic.permute(0, 2, 3, 1) * (0.06 * k[:, None, None, None])  # ~0.8 px sd at 1
    grid = grid + wobble  # (B, 28, 28, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def roughen(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What pens, pencils and photos do that MNIST's scans don't, batched: (B,1,28,28) -> same.

    Per image, at random: a thicker or thinner stroke (a blend towards a 3x3 dilation or
    erosion), blur, a faint or uneven stroke (gamma and peak), a gap cut through the stroke (a
    broken pencil line), and a short faint straight line (what a ruled line leaves where it
    crossed the ink). Each happens to a minority of images, so MNIST's own look stays the most
    common one.
    """
    b, device = images.shape[0], images.device

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(device)

    u = draw(b, 8)  # one column per decision
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    width = (u[:, 0] * 2 - 1).view(b, 1, 1, 1)  # <0 thinner, >0 thicker
    width = torch.where(u[:, 1].view(b, 1, 1, 1) < 0.4, width, torch.zeros_like(width))
    out = torch.where(
        width > 0, images + width * (dilated - images), images + width * 0.7 * (images - eroded)
    )
    blurred = F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
    blur = (u[:, 2] < 0.2).float().view(b, 1, 1, 1) * u[:, 3].view(b, 1, 1, 1)
    out = out + blur * (blurred - out)
    gamma = torch.where(u[:, 4] < 0.25, 0.6 + u[:, 5], torch.ones_like(u[:, 5])).view(b, 1, 1, 1)
    out = out.clamp(0, 1).pow(gamma)
    rows = torch.arange(28, device=device).view(1, 1, 28, 1)
    cols = torch.arange(28, device=device).view(1, 1, 1, 28)
    pos = draw(b, 4) * 28
    gap_row = (rows - pos[:, 0].view(b, 1, 1, 1)).abs() < 1.0
    gap_col = (cols - pos[:, 1].view(b, 1, 1, 1)).abs() < 1.0
    horizontal = (u[:, 6] < 0.5).view(b, 1, 1, 1)
    gap = torch.where(horizontal, gap_row, gap_col) & (u[:, 6] < 0.12).view(b, 1, 1, 1)
    out = out.masked_fill(gap, 0.0)
    line_row = (rows - pos[:, 2].view(b, 1, 1, 1)).abs() < 0.5
    start = pos[:, 3].view(b, 1, 1, 1) * 0.5
    line = line_row & (cols >= start) & (cols < start + 14) & (u[:, 7] < 0.06).view(b, 1, 1, 1)
    out = torch.where(line, torch.maximum(out, torch.full_like(out, 0.45)), out)
    return out.clamp(0, 1)
