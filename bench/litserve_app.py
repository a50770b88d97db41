"""The same checkpoint served by LitServe, with its dynamic batching: a serving framework's answer.

    DIGITSUM_MODEL_PATH=models/digitsum.pt BENCH_PORT=8000 python -m bench.litserve_app

LitServe (the `bench` extra) parses the form with Starlette's request.form(), decodes each image
in its API process, batches up to 64 requests for up to 5 ms, and runs the model in an inference
worker process. decode_request does what bench/tutorial_app.py does (Pillow, grey-scale, 28x28,
ToTensor); predict is one forward pass of the TorchScript file, 1 torch thread.
"""

from __future__ import annotations

import io
import os
from typing import Any

import litserve as ls
import numpy as np
import torch
from PIL import Image

MODEL_PATH = os.environ.get("DIGITSUM_MODEL_PATH", "models/digitsum.pt")
MAX_BATCH_SIZE = 64
BATCH_TIMEOUT_S = 0.005


class DigitSumAPI(ls.LitAPI):  # type: ignore[misc]
    """setup once per worker, decode per request, predict per batch, encode per request."""

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        self.model = torch.jit.load(MODEL_PATH, map_location="cpu").eval()

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe passes the form
        image = Image.open(io.BytesIO(request["image"].file.read())).convert("L").resize((28, 28))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return pixels, int(request["number"])  # (1, 28, 28)

    def batch(self, inputs: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([pixels for pixels, _ in inputs])  # (B, 1, 28, 28)
        return images, torch.tensor([number for _, number in inputs])

    def predict(self, x: tuple[torch.Tensor, torch.Tensor]) -> list[dict[str, Any]]:
        images, numbers = x
        with torch.inference_mode():
            outputs = self.model(images, numbers)
        digit_probs = torch.softmax(outputs[0], dim=1)  # (B, 10)
        sum_probs = torch.softmax(outputs[1], dim=1)  # (B, 19)
        digits, totals = digit_probs.argmax(1), sum_probs.argmax(1)
        return [
            {
                "digit": int(digits[i]),
                "digit_confidence": float(digit_probs[i, digits[i]]),
                "sum": int(totals[i]),
                "sum_confidence": float(sum_probs[i, totals[i]]),
                "number": int(numbers[i]),
                "consistent": int(digits[i]) + int(numbers[i]) == int(totals[i]),
                "model_version": "1.0.0",
            }
            for i in range(len(numbers))
        ]

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


if __name__ == "__main__":
    api = DigitSumAPI(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=int(os.environ.get("BENCH_PORT", "8000")),
        log_level="warning",
        generate_client_file=False,
    )
