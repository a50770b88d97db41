"""Degenerate images through the pipeline: only our own 4xx errors may come out.

`make test` runs a bounded fuzz (FUZZ_EXAMPLES); `make fuzz` runs a long one (docs/reliability.md
has its figures). The fixed sweep of tests/degenerate.py runs in full every time.
"""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import ink
from app.errors import NoDigit, ServiceError
from app.imaging import MIN_IMAGE_SIDE, frame_like_mnist, prepare_batch, prepare_image
from tests.degenerate import CONTENTS, Case, as_mode, encode, image_files, sweep

MAX_PIXELS = 25_000_000
# Examples per fuzz test: a bounded run in `make test`; `make fuzz` sets DIGITSUM_FUZZ_EXAMPLES.
FUZZ_EXAMPLES = int(os.environ.get("DIGITSUM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _outcome(case: Case) -> str:
    """What prepare_image makes of it: 'pixels', or our error's code; anything else fails."""
    try:
        pixels = prepare_image(case.data, MAX_PIXELS).pixels
    except ServiceError as exc:
        error = exc
    except Exception as exc:
        pytest.fail(f"{case.name}: {type(exc).__name__}: {exc}")
    else:
        assert pixels.shape == (28, 28), case.name
        assert pixels.dtype == np.float32, case.name
        assert np.isfinite(pixels).all(), case.name
        assert 0 <= pixels.min() <= pixels.max() <= 1, case.name
        return "pixels"
    assert 400 <= error.status < 500, f"{case.name}: {error.status} {error.code}"
    return error.code


def test_every_degenerate_image_gets_pixels_or_our_4xx() -> None:
    counts: dict[str, int] = {}
    for case in sweep():
        outcome = _outcome(case)
        counts[outcome] = counts.get(outcome, 0) + 1
        h, w = (int(n) for n in case.name.split()[0].split("x"))
        if min(h, w) < MIN_IMAGE_SIDE:
            assert outcome == "image_too_small", case.name
    assert counts["pixels"] > 0, counts
    assert counts["no_digit"] > 0, counts


def test_prepare_batch_gives_each_degenerate_image_its_own_4xx_or_pixels() -> None:
    cases = sweep()[::7]
    outcomes = prepare_batch([case.data for case in cases], MAX_PIXELS)
    for case, outcome in zip(cases, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            assert outcome.status < 500, f"{case.name}: {outcome.code}"


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 64), (64, 1), (2, 9), (3, 300)])
@pytest.mark.parametrize("content", sorted(CONTENTS))
def test_every_step_handles_degenerate_geometry(shape: tuple[int, int], content: str) -> None:
    """Below the service's smallest side too: the steps themselves never raise on one-pixel
    marks, empty masks, a single point or a 1x1 image (warnings are errors here)."""
    grey = CONTENTS[content](*shape, np.random.default_rng(0)).astype(np.float32) / 255.0
    for polarity in (grey, 1.0 - grey):
        try:
            found = ink.digit_ink(polarity)
        except NoDigit:
            continue
        assert found.pixels.shape == shape
        framed = frame_like_mnist(found.pixels)
        assert framed.shape == (28, 28)


@FUZZ
@given(case=image_files())
def test_fuzz_prepare_image_raises_only_our_4xx(case: Case) -> None:
    _outcome(case)


@FUZZ
@given(case=image_files(), seed=st.integers(0, 2**32 - 1), cuts=st.integers(1, 8))
def test_fuzz_corrupt_files_are_invalid_image_not_500(case: Case, seed: int, cuts: int) -> None:
    """Truncated and bit-flipped files of every format: the decoders' errors are the caller's
    (400 invalid_image), and nothing else escapes."""
    rng = random.Random(seed)
    data = bytearray(case.data)
    if rng.random() < 0.3:
        data = data[: rng.randrange(1, len(data))]
    else:
        for _ in range(cuts):
            data[rng.randrange(len(data))] = rng.randrange(256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corruption it tolerates
        _outcome(Case(f"corrupted {case.name}", bytes(data)))


def test_a_file_with_corrupt_exif_is_read_without_its_orientation() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    image = as_mode(CONTENTS["strokes"](60, 50, rng), "RGB", rng)
    clean = encode(image, "WEBP")
    assert clean is not None
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", exif=exif.tobytes())
    data = buffer.getvalue()
    at = data.find(b"MM\x00*") if b"MM\x00*" in data else data.find(b"II*\x00")
    assert at > 0
    broken = data[:at] + b"XX" + data[at + 2 :]  # the EXIF's TIFF header is no longer one
    assert _outcome(Case("corrupt EXIF", broken)) in ("pixels", "no_digit")
