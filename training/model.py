"""DigitSumNet: one image trunk, a digit head, and a sum head that learns to add the number.

Kept scriptable (TorchScript) and free of training imports: `export.py` scripts it as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

NUM_DIGITS = 10
NUM_SUMS = 19  # 0 + 0 .. 9 + 9

# MNIST's own pixel statistics (train split), applied inside the module so callers never do.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of DigitSumNet; saved in the checkpoint's model card."""

    channels: tuple[int, int, int] = (16, 32, 64)
    feature_dim: int = 128
    number_dim: int = 32
    sum_hidden: int = 128
    dropout: float = 0.1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DigitSumNet(nn.Module):
    """forward(image (B,1,28,28) float in [0,1], number (B,) int64 in 0..9) -> (digit (B,10), sum (B,19)).

    The sum head sees the image features and a learned embedding of the number, and is trained
    jointly with the digit head; nothing adds argmax(digit) + number after the fact.
    """

    __jit_ignored_attributes__ = ["config"]  # plain Python; the card carries it instead

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        c1, c2, c3 = cfg.channels
        self.trunk = nn.Sequential(
            _conv_bn_relu(1, c1, 5),  # (B, c1, 28, 28)
            nn.MaxPool2d(2),  # (B, c1, 14, 14)
            _conv_bn_relu(c1, c2, 3),  # (B, c2, 14, 14)
            nn.MaxPool2d(2),  # (B, c2, 7, 7)
            _conv_bn_relu(c2, c3, 3),  # (B, c3, 7, 7)
            nn.MaxPool2d(2, ceil_mode=True),  # (B, c3, 4, 4)
            nn.Flatten(),  # (B, c3 * 16)
            nn.Dropout(cfg.dropout),
            nn.Linear(c3 * 16, cfg.feature_dim, bias=False),
            nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.digit_head = nn.Linear(cfg.feature_dim, NUM_DIGITS)
        self.number_embedding = nn.Embedding(NUM_DIGITS, cfg.number_dim)
        self.sum_head = nn.Sequential(
            nn.Linear(cfg.feature_dim + cfg.number_dim, cfg.sum_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.sum_hidden, NUM_SUMS),
        )
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))

    @torch.jit.export
    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> image features (B, feature_dim)."""
        return self.trunk((image - self.mean) / self.std)

    @torch.jit.export
    def heads(
        self, features: torch.Tensor, number: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, F) and number (B,) -> (digit_logits (B, 10), sum_logits (B, 19))."""
        digit_logits = self.digit_head(features)
        number_features = self.number_embedding(number)  # (B, number_dim)
        sum_logits = self.sum_head(torch.cat([features, number_features], dim=1))
        return digit_logits, sum_logits

    def forward(
        self, image: torch.Tensor, number: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.embed(image), number)
