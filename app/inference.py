"""Loading the TorchScript checkpoint and predicting, through one dynamic batcher. No FastAPI here.

Concurrent requests are gathered into one forward pass: while the model runs a batch, new images
queue; the next batch takes all of them (up to `max_size`). At low load nothing waits, so a lone
request pays no batching delay; under load, batches grow and the model's cost per image falls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from app import metrics
from app.errors import InferenceTimeout, ModelLoadError, Overloaded, ServiceError
from app.imaging import prepare_batch

log = logging.getLogger("digitsum")

CARD_EXTRA_FILE = "metadata.json"


@dataclass(frozen=True)
class Prediction:
    """One answer of the network: both heads' argmax and softmax probability."""

    digit: int
    digit_confidence: float
    sum: int
    sum_confidence: float


@dataclass
class LoadedModel:
    """The checkpoint, ready on its device, with its card and the file's SHA-256."""

    module: torch.jit.ScriptModule
    card: dict[str, Any]
    sha256: str
    device: torch.device
    dtype: torch.dtype = torch.float32

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unknown"))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, numbers: torch.Tensor) -> list[Prediction]:
        """images (B, 1, 28, 28) float32 on the CPU, numbers (B,) int64 -> B predictions."""
        if self.device.type == "cuda":
            images = images.pin_memory().to(self.device, non_blocking=True)
            numbers = numbers.pin_memory().to(self.device, non_blocking=True)
        images = images.to(self.dtype)
        digit_logits, sum_logits = self.module(images, numbers)
        # One copy to the host, then NumPy: a handful of small torch ops would cost more in
        # dispatch than the arithmetic (about 80 us per batch on this CPU).
        logits = torch.cat((digit_logits, sum_logits), 1).float().cpu().numpy()  # (B, 29)
        digit, digit_p = _argmax_and_probability(logits[:, :10])
        total, sum_p = _argmax_and_probability(logits[:, 10:])
        return [
            Prediction(d, dp, s, sp)
            for d, dp, s, sp in zip(
                digit.tolist(), digit_p.tolist(), total.tolist(), sum_p.tolist(), strict=True
            )
        ]


def _argmax_and_probability(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the argmax and its softmax probability, 1 / sum(exp(logits - max))."""
    best = logits.max(1, keepdims=True)
    return logits.argmax(1), 1.0 / np.exp(logits - best).sum(1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"DIGITSUM_DEVICE={name}, but CUDA is not available here")
    return device


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(path: Path, device: torch.device, precision: str = "fp32") -> LoadedModel:
    """Load, check the contract with one forward pass, and optimise for inference.

    Half precision (bf16/fp16) is for CUDA only, and only worth it where its argmax agrees with
    fp32 on the whole MNIST test set (tests/app/test_gpu.py checks that where CUDA exists).
    """
    dtype = PRECISIONS[precision]
    if dtype != torch.float32 and device.type != "cuda":
        raise ModelLoadError(f"DIGITSUM_PRECISION={precision} needs a CUDA device; use fp32")
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (set DIGITSUM_MODEL_PATH)")
    data = path.read_bytes()
    extra = {CARD_EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream in favour of torch.export, but it is our file
            # format's contract (loads with no project code); the warning helps no operator.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
            module.eval().to(dtype)
            frozen = torch.jit.freeze(module)
            if device.type == "cpu":
                # oneDNN convolutions with weights pre-packed: about 3x the images/s at batch 64
                # on this CPU (make bench, model only); the same answers (tests check).
                frozen = torch.jit.optimize_for_inference(frozen)
    except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors...
        raise ModelLoadError(f"{path} is not a loadable TorchScript file: {exc}") from exc
    try:
        card: dict[str, Any] = json.loads(extra[CARD_EXTRA_FILE] or "{}")
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: its {CARD_EXTRA_FILE} is not JSON") from exc
    # Freezing (above) folds BatchNorm into the convolutions and inlines attributes: the same
    # outputs (tests/app/test_inference.py checks).
    model = LoadedModel(frozen, card, hashlib.sha256(data).hexdigest(), device, dtype)
    try:
        (p,) = model.predict(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    except Exception as exc:
        raise ModelLoadError(f"{path} does not follow the digitsum contract: {exc}") from exc
    if not (0 <= p.digit <= 9 and 0 <= p.sum <= 18):
        raise ModelLoadError(f"{path} does not follow the digitsum contract (digit/sum range)")
    return model


def warm_up(model: LoadedModel, max_batch: int) -> None:
    """Run every batch size the batcher can form (powers of two on CPU), so no user pays for it."""
    sizes = range(1, max_batch + 1) if model.device.type == "cuda" else _powers_of_two(max_batch)
    for size in sizes:
        model.predict(torch.zeros(size, 1, 28, 28), torch.zeros(size, dtype=torch.long))
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def _powers_of_two(limit: int) -> list[int]:
    sizes, size = [], 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return [*sizes, limit]


# What the batcher takes for one image: upload bytes, decoded inside the batch on the model's
# thread (small PNGs: app.imaging.is_light), or pixels already prepared in the preprocessing pool.
Upload = bytes | np.ndarray


class Answer(NamedTuple):
    """One image's prediction, with the (28, 28) pixels the model saw."""

    prediction: Prediction
    pixels: np.ndarray


@dataclass
class _Pending:
    image: Upload
    number: int
    future: asyncio.Future[Answer]
    queued_at: float = field(default_factory=time.perf_counter)


_COUNT_BY_DIGIT = [metrics.PREDICTIONS.labels(str(d)) for d in range(10)]


class DynamicBatcher:
    """Gathers concurrent predictions into batched forward passes on one model thread.

    The model thread also decodes the batch's small uploads (app.imaging.prepare_batch): one
    hand-off per batch instead of one per image, which on one CPU cost more than the decoding.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_size: int,
        max_wait_s: float,
        max_queue: int,
        timeout_s: float,
        max_image_pixels: int = 25_000_000,
    ) -> None:
        self.model = model
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.max_image_pixels = max_image_pixels
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the model thread."""
        while not self._queue.empty():
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def predict_many(self, items: list[tuple[Upload, int]]) -> list[Answer | ServiceError]:
        """Queue all items at once (all or none: 503 when the queue has no room) and await them.
        An image that cannot be decoded gets its own error in its place; the others are answered.
        No later than timeout_s after queueing, each item has its answer or InferenceTimeout.
        """
        pending = self._enqueue(items)
        try:
            results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        finally:
            for p in pending:  # a disconnected caller's entries are skipped
                p.future.cancel()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ServiceError):
                raise result  # the model failed: the whole request fails (a 500)
        return results  # type: ignore[return-value]  # Answers and ServiceErrors only, checked

    async def predict(self, image: Upload, number: int) -> Answer:
        """One image (predict_many without the gathering, for the common case)."""
        (pending,) = self._enqueue([(image, number)])
        try:
            return await pending.future
        finally:
            pending.future.cancel()  # a disconnected caller's entry is skipped

    def _enqueue(self, items: list[tuple[Upload, int]]) -> list[_Pending]:
        if self._queue.qsize() + len(items) > self.max_queue:
            raise Overloaded("the service is at capacity; retry shortly")
        loop = asyncio.get_running_loop()
        pending = [_Pending(image, number, loop.create_future()) for image, number in items]
        for p in pending:
            self._queue.put_nowait(p)
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return pending

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return [p for p in batch if not p.future.done()]

    async def _run(self) -> None:
        # The timeout is kept here, with one timer per batch rather than one per request: an
        # item older than timeout_s is failed when its batch forms, and a forward pass that
        # outlasts its oldest item's deadline fails its batch (the model thread finishes it
        # unobserved; later batches queue behind it and are timed out the same way).
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            started = time.perf_counter()
            live = []
            for p in batch:
                metrics.QUEUE_WAIT_SECONDS.observe(started - p.queued_at)
                if started - p.queued_at < self.timeout_s:
                    live.append(p)
                else:
                    p.future.set_exception(self._timed_out())
            if not live:
                continue
            deadline = min(p.queued_at for p in live) + self.timeout_s
            try:
                results = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._forward, live),
                    deadline - time.perf_counter(),
                )
            except Exception as exc:  # a model failure fails this batch's requests, not the loop
                if isinstance(exc, TimeoutError):
                    log.error("forward pass of %d images outlasted the timeout", len(live))
                    exc = self._timed_out()
                else:
                    log.exception("forward pass failed")
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, result in zip(live, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(result, ServiceError):
                    p.future.set_exception(result)
                else:
                    p.future.set_result(result)

    @staticmethod
    def _timed_out() -> InferenceTimeout:
        return InferenceTimeout("the prediction took too long; retry shortly")

    def _forward(self, batch: list[_Pending]) -> list[Answer | ServiceError]:
        """On the model thread: decode what came as bytes, then one forward pass for the rest."""
        started = time.perf_counter()
        uploads = [p.image for p in batch if isinstance(p.image, bytes)]
        decoded = iter(prepare_batch(uploads, self.max_image_pixels) if uploads else ())
        inputs = [next(decoded) if isinstance(p.image, bytes) else p.image for p in batch]
        if uploads:
            metrics.PREPROCESS_SECONDS.observe(time.perf_counter() - started)
        good = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
        predictions: dict[int, Prediction] = {}
        if good:
            started = time.perf_counter()
            images = torch.from_numpy(np.stack([inputs[i] for i in good])).unsqueeze(1)
            numbers = torch.tensor([batch[i].number for i in good], dtype=torch.long)
            predictions = dict(zip(good, self.model.predict(images, numbers), strict=True))
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(good))
            for prediction in predictions.values():
                _COUNT_BY_DIGIT[prediction.digit].inc()
        return [
            x if isinstance(x, ServiceError) else Answer(predictions[i], x)
            for i, x in enumerate(inputs)
        ]
