"""DigitSumNet: one image trunk, a digit head, a sum head that learns to add the number, and a
"not a digit" head that says when the image holds no digit at all.

Kept scriptable (TorchScript) and free of training imports: `export.py` scripts it as is.
(No `from __future__ import annotations` here: TorchScript must read the annotations as types.)
"""

from dataclasses import asdict, dataclass
from typing import ClassVar

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

    channels: tuple[int, int, int] = (24, 48, 96)
    feature_dim: int = 128
    dropout: float = 0.1
    # The sum head reads the softmax of the digit logits times this. A near-tie between two
    # digits (0.50 against 0.49) is where a learned table's small unevenness can pick the other
    # sum; sharpening multiplies the margin, so the sum follows the digit. Training runs at 1;
    # the table refit after training (training/train.py settle_addition_table) and the export
    # read TrainConfig.settle_sharpness.
    belief_sharpness: float = 1.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DigitSumNet(nn.Module):
    """forward(image (B,1,28,28) in [0,1], number (B,) int64 0..9)
    -> (digit (B,10), sum (B,19), not_digit (B,)) logits.

    The sum head is a learned addition table: for each number n, a (10 x 19) matrix that maps
    the digit head's belief (its softmax over 0..9) to 19 sum logits. It starts at zero and is
    trained jointly with the digit head (its own cross-entropy on digit + number, and agreement
    with the digit head), so the table of sums is learned from the pairs, not written in code;
    its gradients flow back into the image trunk too. Nothing adds argmax(digit) + number.

    The not-digit head is one logit, trained on letters, symbols and scribbles against digits:
    sigmoid(not_digit) is the network's belief that there is no digit to read. The digit and
    sum logits leave the module divided by temperatures fitted after training on a validation
    slice (training/calibrate.py), so that their softmax confidences mean what they say; the
    temperatures are 1 while training.
    """

    __jit_ignored_attributes__: ClassVar[list[str]] = ["config"]  # the card carries it instead
    belief_sharpness: float
    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor
    digit_temperature: torch.Tensor
    sum_temperature: torch.Tensor

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.belief_sharpness = cfg.belief_sharpness
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
        self.not_digit_head = nn.Linear(cfg.feature_dim, 1)
        # addition_table[n, d, s]: how much "the digit is d" speaks for "the sum is s" when the
        # number is n. Zero at the start; what it holds after training is learned.
        self.addition_table = nn.Parameter(torch.zeros(NUM_DIGITS, NUM_DIGITS, NUM_SUMS))
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))
        self.register_buffer("digit_temperature", torch.tensor(1.0))
        self.register_buffer("sum_temperature", torch.tensor(1.0))

    @torch.jit.export
    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> image features (B, feature_dim)."""
        features: torch.Tensor = self.trunk((image - self.mean) / self.std)
        return features

    @torch.jit.export
    def heads(
        self, features: torch.Tensor, number: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, F) and number (B,) -> (digit_logits (B, 10), sum_logits (B, 19)),
        both divided by their calibrated temperatures."""
        digit_logits = self.digit_head(features)  # (B, 10)
        sum_logits = self.read_table(digit_logits, number)
        return digit_logits / self.digit_temperature, sum_logits / self.sum_temperature

    def read_table(self, digit_logits: torch.Tensor, number: torch.Tensor) -> torch.Tensor:
        """Uncalibrated digit logits (B, 10) and number (B,) -> uncalibrated sum logits (B, 19):
        the addition table read at the digit head's sharpened belief. The one place the sum
        head's arithmetic lives; the table's refit after training (training/train.py
        settle_addition_table) goes through it too."""
        # (B, 10), uncalibrated and sharpened: what the table was trained on
        belief = (digit_logits * self.belief_sharpness).softmax(1)
        table = self.addition_table[number]  # (B, 10, 19): this pair's number picks its matrix
        sum_logits: torch.Tensor = torch.bmm(belief.unsqueeze(1), table).squeeze(1)  # (B, 19)
        return sum_logits

    @torch.jit.export
    def not_digit(self, features: torch.Tensor) -> torch.Tensor:
        """Features (B, F) -> the not-a-digit logit (B,)."""
        logit: torch.Tensor = self.not_digit_head(features).squeeze(1)
        return logit

    def forward(
        self, image: torch.Tensor, number: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.embed(image)
        digit_logits, sum_logits = self.heads(features, number)
        return digit_logits, sum_logits, self.not_digit(features)
