"""Shared fixtures: the shipped checkpoint, the MNIST test set shipped in tests/data, a client.

App tests run against the real shipped model through TestClient used as a context manager, so
the lifespan (load, warm-up, batcher) runs exactly as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from training.data import Split, load_split

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = REPO_ROOT / "models" / "digitsum.pt"
TEST_DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def mnist_test() -> Split:
    """The 10,000 MNIST test images, (N, 1, 28, 28) float in [0, 1], and labels."""
    return load_split(TEST_DATA_DIR / "MNIST" / "raw", "t10k")


@pytest.fixture(scope="session")
def shipped_model() -> torch.jit.ScriptModule:
    """The committed checkpoint, loaded the way any user loads it."""
    return torch.jit.load(str(MODEL_PATH), map_location="cpu").eval()


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"model_path": MODEL_PATH, "device": "cpu"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """One service for the whole session, on the shipped model (lifespan included)."""
    # Server errors come back as the 500 answers a user would get, not as exceptions.
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as test_client:
        yield test_client


def require_heldout_fonts() -> None:
    """Skip a test that renders the field set's held-out glyph sources when Debian's handwriting
    fonts are not installed (.ci/run installs them), except under CI, where it fails."""
    from training import glyphs

    try:
        glyphs.sources("heldout")
    except glyphs.GlyphSourceMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {exc}", pytrace=False)
        pytest.skip(str(exc))
