"""CUDA paths, run where CUDA exists (skipped elsewhere, e.g. in CI).

Half precision may be switched on (DIGITSUM_PRECISION) only if its argmax agrees with fp32 on
the whole MNIST test set, for both heads: this test is that check.
"""

from __future__ import annotations

import pytest
import torch

from app.inference import LoadedModel, load_model, warm_up
from tests.conftest import MODEL_PATH
from training.data import Split

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _argmax_all(model: LoadedModel, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    digits, sums = [], []
    for number in range(10):
        for start in range(0, len(split), 1000):
            images = split.images[start : start + 1000]
            predictions = model.predict(images, torch.full((len(images),), number))
            digits += [p.digit for p in predictions]
            sums += [p.sum for p in predictions]
    return torch.tensor(digits), torch.tensor(sums)


def test_model_serves_on_cuda_like_on_cpu(mnist_test: Split) -> None:
    cpu = load_model(MODEL_PATH, torch.device("cpu"))
    gpu = load_model(MODEL_PATH, torch.device("cuda"))
    warm_up(gpu, 64)
    for want, got in zip(_argmax_all(cpu, mnist_test), _argmax_all(gpu, mnist_test), strict=True):
        assert torch.equal(want, got)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_argmax_agrees_with_fp32(mnist_test: Split, precision: str) -> None:
    full = load_model(MODEL_PATH, torch.device("cuda"))
    half = load_model(MODEL_PATH, torch.device("cuda"), precision)
    full_digit, full_sum = _argmax_all(full, mnist_test)
    half_digit, half_sum = _argmax_all(half, mnist_test)
    disagree = int((full_digit != half_digit).sum() + (full_sum != half_sum).sum())
    assert disagree == 0, f"{precision}: {disagree} of 200,000 answers differ from fp32"


def test_service_answers_from_the_gpu(mnist_test: Split) -> None:
    """The whole service on CUDA: the batch path (uploads decoded in the batch, pinned copies,
    one forward pass) gives the CPU's answers."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import make_settings
    from tests.imagegen import mnist_png

    cpu = load_model(MODEL_PATH, torch.device("cpu"))
    images = mnist_test.images[:64]
    want = cpu.predict(images, torch.arange(64) % 10)
    with TestClient(create_app(make_settings(device="cuda"))) as client:
        assert client.get("/model").json()["device"].startswith("cuda")
        response = client.post(
            "/predict/batch",
            files=[
                ("images", (f"{i}.png", mnist_png(image), "image/png"))
                for i, image in enumerate(images)
            ],
            data={"numbers": [str(i % 10) for i in range(64)]},
        )
        assert response.status_code == 200
        got = [r["prediction"] for r in response.json()["results"]]
        single = client.post(
            "/predict",
            files={"image": ("0.png", mnist_png(images[0]), "image/png")},
            data={"number": "0"},
        ).json()
    assert [(g["digit"], g["sum"]) for g in got] == [(w.digit, w.sum) for w in want]
    assert (single["digit"], single["sum"]) == (want[0].digit, want[0].sum)
