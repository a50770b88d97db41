"""Model loading, freezing, and the dynamic batcher: batching, routing, dropping, backpressure."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from app import engine
from app.config import DEFAULT_MAX_IMAGE_PIXELS
from app.errors import InferenceTimeout, InvalidImage, ModelLoadError, Overloaded
from app.inference import Answer, DynamicBatcher, LoadedModel, load_model
from tests.conftest import MODEL_PATH
from tests.imagegen import mnist_png
from training.data import Split


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(MODEL_PATH, torch.device("cpu"))


def test_frozen_model_gives_the_same_outputs_as_the_file(
    loaded: LoadedModel, shipped_model: torch.jit.ScriptModule, mnist_test: Split
) -> None:
    images, numbers = mnist_test.images[:512], torch.arange(512) % 10
    with torch.inference_mode():
        for want, got in zip(
            shipped_model(images, numbers), loaded.module(images, numbers), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            if want.dim() == 2:  # the heads' logits; the not-digit logit is (B,)
                assert torch.equal(got.argmax(1), want.argmax(1))


def test_torchscript_engine_gives_the_same_outputs_as_the_file(
    shipped_model: torch.jit.ScriptModule, mnist_test: Split
) -> None:
    loaded = load_model(MODEL_PATH, torch.device("cpu"), cpu_engine="torchscript")
    assert loaded.engine == "torchscript"
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    images, numbers = mnist_test.images[:512], torch.arange(512) % 10
    with torch.inference_mode():
        for want, got in zip(
            shipped_model(images, numbers), loaded.module(images, numbers), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_onnxruntime_answers_as_torchscript_on_every_mnist_test_pair(
    loaded: LoadedModel, mnist_test: Split
) -> None:
    """The engine the CPU serves with (the default) against the TorchScript module whose
    figures the model card reports: the same digit, sum and refusal for all 10,000 test images,
    each with a different number per image, and confidences within 1e-4 (float32 kernels that
    sum in another order)."""
    assert loaded.engine == "onnxruntime"
    torchscript = load_model(MODEL_PATH, torch.device("cpu"), cpu_engine="torchscript")
    images = mnist_test.images
    for shift in (0, 3, 7):  # every image meets three of the ten numbers
        numbers = (torch.arange(len(images)) + shift) % 10
        got, want = loaded.predict(images, numbers), torchscript.predict(images, numbers)
        assert [p[::2] for p in got] == [p[::2] for p in want]  # digit, sum, no_digit
        worst = max(
            max(
                abs(a.digit_confidence - b.digit_confidence),
                abs(a.sum_confidence - b.sum_confidence),
            )
            for a, b in zip(got, want, strict=True)
        )
        assert worst <= 1e-4


def test_engine_that_differs_from_the_file_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = engine.OnnxForward.__call__

    def off_by_a_little(
        self: engine.OnnxForward, images: torch.Tensor, numbers: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        digit, total, not_digit = real(self, images, numbers)
        digit[:, 3] += 0.01  # what a wrong graph, or a kernel gone wrong, would look like
        return digit, total, not_digit

    monkeypatch.setattr(engine.OnnxForward, "__call__", off_by_a_little)
    with pytest.raises(
        ModelLoadError, match=r"digit logits differ.*DIGITSUM_CPU_ENGINE=torchscript"
    ):
        load_model(MODEL_PATH, torch.device("cpu"))
    assert load_model(MODEL_PATH, torch.device("cpu"), cpu_engine="torchscript").engine == (
        "torchscript"
    )


def test_checkpoint_onnx_cannot_export_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot(module: torch.jit.ScriptModule) -> bytes:
        raise RuntimeError("Exporting the operator 'aten::something' is not supported")

    monkeypatch.setattr(engine, "export_onnx", cannot)
    with pytest.raises(ModelLoadError, match="cannot export it to ONNX: Exporting the operator"):
        load_model(MODEL_PATH, torch.device("cpu"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "not a loadable TorchScript"),
        (b"PK\x03\x04 truncated zip", "not a loadable TorchScript"),
    ],
)
def test_bad_model_files_are_clear_errors(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        load_model(path, torch.device("cpu"))


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "half.pt"
    path.write_bytes(MODEL_PATH.read_bytes()[: MODEL_PATH.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="not a loadable TorchScript"):
        load_model(path, torch.device("cpu"))


def test_other_torchscript_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(path))
    with pytest.raises(ModelLoadError, match="contract"):
        load_model(path, torch.device("cpu"))


def _pixels(split: Split, i: int) -> np.ndarray:
    """Image i as prepared pixels (28, 28), the way the preprocessing pool hands them over."""
    pixels: np.ndarray = split.images[i, 0].numpy()
    return pixels


def _batcher(model: LoadedModel, **kwargs: float) -> DynamicBatcher:
    options: dict[str, float] = {
        "max_size": 64,
        "max_wait_s": 0.0,
        "max_queue": 512,
        "timeout_s": 10.0,
        "gather_s": 0.0,
    }
    options.update(kwargs)
    return DynamicBatcher(
        model,
        max_size=int(options["max_size"]),
        max_wait_s=options["max_wait_s"],
        max_queue=int(options["max_queue"]),
        timeout_s=options["timeout_s"],
        max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
        gather_s=options["gather_s"],
    )


def _record_pass_sizes(loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every forward pass the model is asked for from now on."""
    sizes: list[int] = []
    real_predict = loaded.predict

    def recording(images: torch.Tensor, numbers: torch.Tensor) -> list[object]:
        sizes.append(len(images))
        return real_predict(images, numbers)  # type: ignore[return-value]

    monkeypatch.setattr(loaded, "predict", recording)
    return sizes


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(
    loaded: LoadedModel, mnist_test: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_predict = loaded.predict
    sizes = _record_pass_sizes(loaded, monkeypatch)
    expected = real_predict(mnist_test.images[:200], torch.arange(200) % 10)

    async def scenario() -> list[object]:
        batcher = _batcher(loaded, max_size=32, max_wait_s=0.002)
        batcher.start()
        try:
            return list(
                await asyncio.gather(
                    *(batcher.predict(_pixels(mnist_test, i), i % 10) for i in range(200))
                )
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    # each caller got the answer for its own image and number
    assert [r.prediction for r in results] == expected  # type: ignore[attr-defined]
    assert sum(sizes) == 200
    assert max(sizes) == 32
    assert len(sizes) < 50  # batched, not one pass per request


# A bound that only a wait of the batcher's could reach: the batcher under test is told to wait
# an hour (GATHER_FOREVER_S) where it should wait, so a test fails by orders of magnitude, not by
# milliseconds that a busy CI machine could lose (timing claims live in bench/).
GATHER_FOREVER_S = 3600.0
NEVER_WAITED_S = 60.0


def _pass_sizes_when_clients_return_one_by_one(
    loaded: LoadedModel, mnist_test: Split, monkeypatch: pytest.MonkeyPatch, gather_s: float
) -> list[int]:
    """Three clients answered in one pass ask again one after the other, each only once the one
    before has queued (or, without gathering, been answered): the sizes of the passes."""
    sizes = _record_pass_sizes(loaded, monkeypatch)

    async def scenario() -> None:
        batcher = _batcher(loaded, gather_s=gather_s)
        batcher.start()
        try:
            await asyncio.gather(*(batcher.predict(_pixels(mnist_test, i), i) for i in range(3)))
            again = []
            for i in range(3):
                again.append(asyncio.ensure_future(batcher.predict(_pixels(mnist_test, i), i)))
                while batcher.depth == 0 and not again[-1].done():
                    await asyncio.sleep(0)  # until it is queued, or already answered
                if not gather_s:
                    await again[-1]
            async with asyncio.timeout(NEVER_WAITED_S):
                await asyncio.gather(*again)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    return sizes


def test_clients_answered_together_are_gathered_again(
    loaded: LoadedModel, mnist_test: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    gathered = _pass_sizes_when_clients_return_one_by_one(
        loaded, mnist_test, monkeypatch, GATHER_FOREVER_S
    )
    assert gathered == [3, 3]
    # without gathering, the first to come back goes alone
    assert _pass_sizes_when_clients_return_one_by_one(loaded, mnist_test, monkeypatch, 0.0) == [
        3,
        1,
        1,
        1,
    ]


def test_a_lone_client_never_waits_to_be_gathered(loaded: LoadedModel, mnist_test: Split) -> None:
    async def scenario() -> None:
        batcher = _batcher(loaded, gather_s=GATHER_FOREVER_S)
        batcher.start()
        try:
            async with asyncio.timeout(NEVER_WAITED_S):  # five requests, none waits an hour
                for i in range(5):
                    await batcher.predict(_pixels(mnist_test, i), i)
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_full_queue_answers_overloaded_at_once(loaded: LoadedModel, mnist_test: Split) -> None:
    async def scenario() -> None:
        batcher = _batcher(loaded, max_queue=4)  # not started: nothing drains the queue
        waiting = [
            asyncio.ensure_future(batcher.predict(_pixels(mnist_test, 0), 0)) for _ in range(4)
        ]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.predict(_pixels(mnist_test, 0), 0)
        with pytest.raises(Overloaded):
            await batcher.predict_many([_pixels(mnist_test, 0)] * 5, [0] * 5)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(scenario())


def test_cancelled_caller_is_dropped_without_harming_the_others(
    loaded: LoadedModel, mnist_test: Split
) -> None:
    async def scenario() -> tuple[int, list[object]]:
        batcher = _batcher(loaded, max_size=8)
        keep = [asyncio.ensure_future(batcher.predict(_pixels(mnist_test, i), i)) for i in range(4)]
        gone = asyncio.ensure_future(batcher.predict(_pixels(mnist_test, 9), 9))
        await asyncio.sleep(0)
        gone.cancel()  # the client left before its batch ran
        batcher.start()
        try:
            results = list(await asyncio.gather(*keep))
        finally:
            await batcher.stop()
        return batcher.depth, results

    depth, results = asyncio.run(scenario())
    expected = loaded.predict(mnist_test.images[:4], torch.arange(4))
    assert [r.prediction for r in results] == expected  # type: ignore[attr-defined]
    assert depth == 0


def test_uploads_are_decoded_in_the_batch_and_a_bad_one_fails_alone(
    loaded: LoadedModel, mnist_test: Split
) -> None:
    uploads: list[bytes | np.ndarray] = [mnist_png(mnist_test.images[i]) for i in range(6)]
    uploads[2] = b"not an image"
    uploads[4] = _pixels(mnist_test, 4)  # prepared in the pool, as large images are

    async def scenario() -> list[object]:
        batcher = _batcher(loaded, max_size=8)
        batcher.start()
        try:
            return list(await batcher.predict_many(uploads, list(range(len(uploads)))))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    expected = loaded.predict(mnist_test.images[:6], torch.arange(6))
    assert isinstance(results[2], InvalidImage)
    for i in (0, 1, 3, 4, 5):
        answer = results[i]
        assert isinstance(answer, Answer)
        got, want = answer.prediction, expected[i]
        assert (got.digit, got.sum) == (want.digit, want.sum)
        # a batch of 5 and one of 6 may take different oneDNN kernels: equal to float precision
        assert got.digit_confidence == pytest.approx(want.digit_confidence, abs=1e-5)
        assert np.array_equal(answer.pixels, _pixels(mnist_test, i))  # what the model saw


def _hold_forward_passes(
    loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """From now on every forward pass blocks until `release` is set; `entered` is set once one
    has started. The caller must set `release` in the end (the model thread would keep it)."""
    real_predict = loaded.predict
    entered, release = threading.Event(), threading.Event()

    def held(images: torch.Tensor, numbers: torch.Tensor) -> list[object]:
        entered.set()
        release.wait()
        return real_predict(images, numbers)  # type: ignore[return-value]

    monkeypatch.setattr(loaded, "predict", held)
    return entered, release


def test_a_stuck_forward_pass_times_out_its_callers_and_later_ones(
    loaded: LoadedModel, mnist_test: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = _hold_forward_passes(loaded, monkeypatch)

    async def scenario() -> None:
        batcher = _batcher(loaded, timeout_s=0.2)
        batcher.start()
        try:
            for i in range(2):  # the second queues behind the first, still running
                with pytest.raises(InferenceTimeout):
                    await batcher.predict(_pixels(mnist_test, i), 0)
                # answered by the deadline while the forward pass had not returned
                assert entered.is_set()
                assert not release.is_set()
        finally:
            await batcher.stop()

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_stop_with_a_hung_forward_pass_keeps_the_loop_running_and_ends_at_its_deadline(
    loaded: LoadedModel, mnist_test: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = _hold_forward_passes(loaded, monkeypatch)
    outcome: dict[str, object] = {}

    async def scenario() -> None:
        batcher = _batcher(loaded, timeout_s=GATHER_FOREVER_S)  # its caller would wait an hour
        batcher.start()
        caller = asyncio.ensure_future(batcher.predict(_pixels(mnist_test, 0), 0))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        await batcher.stop(deadline_s=0.05)
        outcome["ticks during stop"] = ticks
        outcome["forward pass still hung"] = not release.is_set()
        ticker.cancel()
        try:
            await caller
        except InferenceTimeout as exc:
            outcome["caller"] = exc

    # In a thread of its own: a stop that blocked its event loop (executor.shutdown(wait=True)
    # on a hung pass) would never return, and the test fails here instead of hanging.
    runner = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    runner.start()
    runner.join(NEVER_WAITED_S)
    try:
        assert not runner.is_alive(), "stop() did not return while a forward pass hung"
        assert outcome["forward pass still hung"] is True
        assert isinstance(outcome["ticks during stop"], int)
        assert outcome["ticks during stop"] > 0  # the loop ran other tasks while stop waited
        assert isinstance(outcome.get("caller"), InferenceTimeout)  # answered, not left hanging
    finally:
        release.set()
