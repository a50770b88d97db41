"""The usual tutorial implementation, served the way most "deploy your PyTorch model" posts do it.

    DIGITSUM_MODEL_PATH=models/digitsum.pt \
        python -m uvicorn bench.tutorial_app:app --loop uvloop --http httptools --no-access-log

A plain `def` endpoint (FastAPI runs it in its thread pool), Pillow to open, grey-scale and
resize, a ToTensor-style conversion, and one forward pass of our TorchScript model per request
with one torch thread. The model is loaded at import time, as those tutorials do; nothing here is
slowed down on purpose, and nothing is added that a tutorial would not have.
"""

from __future__ import annotations

import io
import os
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image

torch.set_num_threads(1)
MODEL_PATH = os.environ.get("DIGITSUM_MODEL_PATH", "models/digitsum.pt")
model = torch.jit.load(MODEL_PATH, map_location="cpu")
model.eval()

app = FastAPI()


def to_tensor(image: Image.Image) -> torch.Tensor:
    """What torchvision's ToTensor does for a grey-scale image: (1, 28, 28) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)


@app.post("/predict")
def predict(
    image: Annotated[UploadFile, File()], number: Annotated[int, Form()]
) -> dict[str, object]:
    img = Image.open(io.BytesIO(image.file.read())).convert("L").resize((28, 28))
    x = to_tensor(img).unsqueeze(0)  # (1, 1, 28, 28)
    with torch.no_grad():
        outputs = model(x, torch.tensor([number]))  # digit and sum logits first, then any others
    digit_logits, sum_logits = outputs[0], outputs[1]
    digit_probs = torch.softmax(digit_logits, dim=1)[0]
    sum_probs = torch.softmax(sum_logits, dim=1)[0]
    digit = int(digit_probs.argmax())
    total = int(sum_probs.argmax())
    return {
        "digit": digit,
        "digit_confidence": float(digit_probs[digit]),
        "sum": total,
        "sum_confidence": float(sum_probs[total]),
        "number": number,
        "consistent": digit + number == total,
        "model_version": "1.0.0",
    }
