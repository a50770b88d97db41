"""bench.precision's counting, on the CPU (its CUDA comparison runs in the GPU check)."""

from __future__ import annotations

import torch

from app.inference import load_model
from bench import precision
from tests.conftest import MODEL_PATH
from training.data import Split


def test_answers_are_the_served_argmax_of_every_pair(mnist_test: Split) -> None:
    split = mnist_test.head(30)
    model = load_model(MODEL_PATH, torch.device("cpu"))
    got = precision.answers(model, split)
    assert got.digits.shape == got.sums.shape == (300,)
    # pairs() runs number 0 over every image first: there the sum is the digit.
    assert (got.sums[:30] == got.digits[:30]).float().mean() > 0.9
    assert (got.digits[:30] == split.labels).float().mean() > 0.9
    digit_gaps, sum_gaps = precision.margins(model, split)
    assert digit_gaps.shape == sum_gaps.shape == (300,)
    assert bool((digit_gaps >= 0).all())
    assert bool((sum_gaps >= 0).all())
    assert precision.differing(got, got) == 0


def test_a_difference_is_measured_by_the_references_margin() -> None:
    reference = precision.Answers(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))
    other = precision.Answers(torch.tensor([1, 7, 3]), torch.tensor([4, 5, 8]))
    gaps = (torch.tensor([0.5, 0.0004, 2.0]), torch.tensor([0.1, 0.2, 0.0002]))
    assert precision.differing(reference, other) == 2
    assert precision.largest_margin_of_a_difference(reference, other, gaps) == (
        torch.tensor(0.0004).item()
    )
    assert precision.largest_margin_of_a_difference(reference, reference, gaps) == 0.0


def test_the_cpu_engines_give_the_same_answers(mnist_test: Split) -> None:
    result = precision.measure_engines(MODEL_PATH, mnist_test.head(50))
    assert result["pairs"] == 500
    assert result["onnxruntime_vs_torchscript"]["differ"] == 0
