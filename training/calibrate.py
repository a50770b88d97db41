"""Confidences that mean what they say, and the "no digit" threshold, from validation data only.

Temperature scaling (Guo et al., 2017): one scalar per head divides its logits, chosen to
minimise the negative log-likelihood on the validation slice; the argmax never changes, only
how sure the softmax says it is. The not-a-digit threshold is the lowest probability that
refuses no more than a set share of validation digits (MNIST's and our synthetic ones).
The MNIST test set is never used here: it only reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ECE_BINS = 15
# Shares of validation digits that the not-a-digit threshold may refuse. MNIST's writers are the
# ones the service must never turn away (issue bar: 0.1 % of its test set); our synthetic glyphs
# are harder and more varied (bar on real-world digits: 2 %).
MAX_MNIST_REFUSED = 0.0005
MAX_SYNTHETIC_REFUSED = 0.01


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on (logits, labels).

    A grid over log T, then a finer grid around the best point: the NLL is convex in 1/T, so
    this finds its minimum without an optimiser's step sizes to tune.
    """
    logits, labels = logits.double(), labels.long()

    def nll(t: float) -> float:
        return float(F.cross_entropy(logits / t, labels))

    grid = [math.exp(x) for x in torch.linspace(math.log(0.05), math.log(5.0), 121).tolist()]
    best = grid[min(range(len(grid)), key=lambda i: nll(grid[i]))]
    fine = [best * math.exp(x) for x in torch.linspace(-0.04, 0.04, 81).tolist()]
    return round(fine[min(range(len(fine)), key=lambda i: nll(fine[i]))], 5)


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by how
    many answers fall in each bin."""
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=True)  # (N,) in 0..bins-1
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    hit_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return float((conf_sum - hit_sum).abs().sum() / max(len(confidence), 1))


def not_digit_threshold(mnist_digits: torch.Tensor, synthetic_digits: torch.Tensor) -> float:
    """The lowest not-a-digit probability at which refusals stay within MAX_MNIST_REFUSED of
    validation MNIST digits and MAX_SYNTHETIC_REFUSED of validation synthetic digits."""
    bounds = [0.5]  # never refuse what the network thinks is more likely a digit than not
    for probs, share in (
        (mnist_digits, MAX_MNIST_REFUSED),
        (synthetic_digits, MAX_SYNTHETIC_REFUSED),
    ):
        if probs.numel():
            bounds.append(float(torch.quantile(probs.double().flatten(), 1 - share)))
    return round(min(max(bounds) + 1e-6, 0.999999), 6)
