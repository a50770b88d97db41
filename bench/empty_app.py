"""The framework's limit: an `async def` endpoint that reads the same form and does nothing else.

    python -m uvicorn bench.empty_app:app --loop uvloop --http httptools --no-access-log

It parses exactly what the service parses (an `image` upload and a `number` field; for the batch
route 64 `images` and 64 `numbers`) and answers a fixed JSON of the service's size, so anything
the service does beyond this is decoding, inference and its own bookkeeping.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, UploadFile

app = FastAPI()

FIXED_PREDICTION = {
    "digit": 7,
    "digit_confidence": 0.9998,
    "sum": 12,
    "sum_confidence": 0.9997,
    "number": 5,
    "consistent": True,
    "model_version": "1.0.0",
}


@app.post("/predict")
async def predict(
    image: Annotated[UploadFile, File()], number: Annotated[int, Form()]
) -> dict[str, object]:
    await image.read()
    return FIXED_PREDICTION


@app.post("/predict/batch")
async def predict_batch(
    images: Annotated[list[UploadFile], File()], numbers: Annotated[list[int], Form()]
) -> dict[str, object]:
    for image in images:
        await image.read()
    return {
        "results": [
            {"index": i, "prediction": FIXED_PREDICTION, "error": None} for i in range(len(images))
        ]
    }
