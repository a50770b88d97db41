"""The framework's limit: the endpoint a FastAPI user would write, reading the same form and
doing nothing else.

    python -m uvicorn bench.empty_app:app --loop uvloop --http httptools --no-access-log
    python -m uvicorn bench.empty_app:bare_app ...   # the same without the range check

`app` (the `limit` yardstick) parses exactly what the service parses, an `image` upload and a
`number` field checked to be 0..9 by `Form(ge=0, le=9)` (for the batch route the `images` and
the `numbers`, each checked), and answers a fixed JSON of the service's size: anything the
service does beyond this is decoding, inference and its own bookkeeping. `bare_app`
(`limit-bare`) skips the range check, which no real endpoint would; it answered 15-25 % more
requests per second than `app` side by side, so it is reported, not barred.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, UploadFile
from pydantic import Field

app = FastAPI()
bare_app = FastAPI()

FIXED_PREDICTION = {
    "digit": 7,
    "digit_confidence": 0.9998,
    "sum": 12,
    "sum_confidence": 0.9997,
    "number": 5,
    "consistent": True,
    "model_version": "1.0.0",
}

Number = Annotated[int, Field(ge=0, le=9)]


def _batch_answer(count: int) -> dict[str, object]:
    return {
        "results": [
            {"index": i, "prediction": FIXED_PREDICTION, "error": None} for i in range(count)
        ]
    }


@app.post("/predict")
async def predict(
    image: Annotated[UploadFile, File()], number: Annotated[int, Form(ge=0, le=9)]
) -> dict[str, object]:
    await image.read()
    return FIXED_PREDICTION


@app.post("/predict/batch")
async def predict_batch(
    images: Annotated[list[UploadFile], File()], numbers: Annotated[list[Number], Form()]
) -> dict[str, object]:
    for image in images:
        await image.read()
    return _batch_answer(len(images))


@bare_app.post("/predict")
async def predict_bare(
    image: Annotated[UploadFile, File()], number: Annotated[int, Form()]
) -> dict[str, object]:
    await image.read()
    return FIXED_PREDICTION


@bare_app.post("/predict/batch")
async def predict_batch_bare(
    images: Annotated[list[UploadFile], File()], numbers: Annotated[list[int], Form()]
) -> dict[str, object]:
    for image in images:
        await image.read()
    return _batch_answer(len(images))
