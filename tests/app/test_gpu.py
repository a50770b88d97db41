"""CUDA paths, run where CUDA exists (skipped elsewhere, e.g. in CI).

fp32 on CUDA gives the CPU's answers, except near-ties (bench.precision says what that means);
half precision (DIGITSUM_PRECISION=bf16/fp16) is measured and printed, not required to agree
on every answer: fp32 stays the default, and the GPU check (scripts/gpu_check.sh) reports the
counts with which a half precision is offered.
"""

from __future__ import annotations

import pytest
import torch

from app.inference import load_model, warm_up
from bench import precision
from tests.conftest import MODEL_PATH
from training.data import Split

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# A half precision that changed more answers than this would be broken, not merely rounded.
HALF_PRECISION_CEILING = 0.01


def test_model_serves_on_cuda_like_on_cpu(mnist_test: Split) -> None:
    cpu = load_model(MODEL_PATH, torch.device("cpu"))
    gpu = load_model(MODEL_PATH, torch.device("cuda"))
    warm_up(gpu, 64)
    want, got = precision.answers(cpu, mnist_test), precision.answers(gpu, mnist_test)
    widest = precision.largest_margin_of_a_difference(want, got, precision.margins(cpu, mnist_test))
    print(f"CUDA fp32 vs CPU: {precision.differing(want, got)} answers differ (near-ties only)")
    assert widest < precision.NEAR_TIE, f"a clear answer changed (CPU margin {widest:.4f})"


@pytest.mark.parametrize("half", ["bf16", "fp16"])
def test_half_precision_agreement_is_measured(mnist_test: Split, half: str) -> None:
    full = precision.answers(load_model(MODEL_PATH, torch.device("cuda")), mnist_test)
    reduced = precision.answers(load_model(MODEL_PATH, torch.device("cuda"), half), mnist_test)
    answers = 20 * len(mnist_test)
    differ = precision.differing(full, reduced)
    print(f"{half}: {differ} of {answers:,} answers differ from fp32")
    assert differ <= HALF_PRECISION_CEILING * answers


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
        model = client.get("/model").json()
        assert model["device"].startswith("cuda")
        assert model["engine"] == "torchscript"  # CUDA runs TorchScript whatever the setting
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
