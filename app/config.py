"""Settings: every knob of the service, from DIGITSUM_* environment variables."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.devices import DEVICE_HELP, check_device_name

# Width x height above which an upload is refused before it is decoded (DIGITSUM_MAX_IMAGE_PIXELS).
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000


class Settings(BaseSettings):
    """Read once per process; a bad value stops start-up with a message naming the variable."""

    model_config = SettingsConfigDict(env_prefix="DIGITSUM_", frozen=True, extra="ignore")

    model_path: Path = Field(Path("models/digitsum.pt"), description="TorchScript checkpoint")
    device: str = Field("auto", description=DEVICE_HELP)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="weights and activations on CUDA; half precision is CUDA-only"
    )
    cpu_engine: Literal["onnxruntime", "torchscript"] = Field(
        "onnxruntime",
        description="what runs the forward pass on a CPU: ONNX Runtime (exported from the "
        "checkpoint at start-up and checked against it) or the TorchScript module itself",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes, one model each")
    torch_threads: int = Field(
        0,
        ge=0,
        description="intra-op threads (torch and ONNX Runtime); 0 = CPUs available / workers",
    )
    preprocess_threads: int = Field(0, ge=0, description="image decoding pool; 0 = CPUs available")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # A 12-megapixel phone photo is 2-8 MB as JPEG (quality 85-95) and 1-3 MB as HEIC; 20 MiB
    # leaves room for the largest JPEG within max_image_pixels at phone quality.
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="request body limit; fits a 12 MP phone photo"
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, ge=784, description="refused before decoding above"
    )
    no_digit_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="answer 422 no_digit when the model's not-a-digit probability reaches this; "
        "unset: the model card's threshold, chosen on validation data; 1: never",
    )
    max_batch_images: int = Field(256, ge=1, le=4096, description="images per /predict/batch")
    batch_max_size: int = Field(
        256, ge=1, le=4096, description="images in the largest forward pass the batcher forms"
    )
    batch_max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="wait to fill a batch; 0 = never"
    )
    batch_gather_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="wait for as many requests as the last batch held; 0 = never",
    )
    max_queue: int = Field(512, ge=1, description="queued images beyond which requests get 503")
    # Admission of all work in flight (app/admission.py), beyond the model's queue: what one
    # worker holds in memory and in its decoding pool, refused with 503 before a body is read.
    max_inflight_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="request bodies being read or held by requests in flight, per worker; six "
        "largest uploads",
    )
    max_decode_queue: int = Field(
        256,
        ge=1,
        description="images waiting for or in the decoding pool; a photo takes it milliseconds",
    )
    max_requests: int = Field(
        1024, ge=1, description="requests in flight per worker; more get 503 before their body"
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="open connections per worker (uvicorn's limit_concurrency); its plain-text "
        "503 backs up max_requests' JSON one",
    )
    inference_timeout_s: float = Field(10.0, gt=0, description="longest wait for a prediction")
    body_timeout_s: float = Field(10.0, gt=0, description="longest pause while receiving a body")
    drain_delay_s: float = Field(0.0, ge=0, le=300, description="503 on readiness before closing")
    graceful_timeout_s: float = Field(
        20.0, ge=0, le=600, description="in-flight requests' deadline"
    )
    keepalive_s: int = Field(75, ge=1, description="idle keep-alive; above load balancers' 60 s")
    forwarded_allow_ips: str = "127.0.0.1"
    cors_origins: list[str] = Field(default_factory=list, description="JSON list; empty = closed")

    @property
    def max_form_parts(self) -> int:
        """The multipart parser's part cap: an image and a number per batch entry, times
        FORM_PARTS_HEADROOM."""
        return FORM_PARTS_HEADROOM * 2 * self.max_batch_images

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        """Settings that only work together, each error naming both: a service configured so
        that a request can never succeed refuses to start rather than answering 503 forever."""
        for (name, unit), (limit, limit_unit), why in _TOGETHER:
            value = getattr(self, name) * _SECONDS.get(unit, 1)
            bound = getattr(self, limit) * _SECONDS.get(limit_unit, 1)
            if value > bound:
                raise ValueError(
                    f"DIGITSUM_{name.upper()}={getattr(self, name)} must not exceed "
                    f"DIGITSUM_{limit.upper()}={getattr(self, limit)}{_UNITS[unit, limit_unit]}: "
                    f"{why}"
                )
        return self

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device_name(value)


# The form's part cap over what a full batch needs (Settings.max_form_parts): a batch somewhat
# over DIGITSUM_MAX_BATCH_IMAGES is parsed and told the limit (422), a flood of parts is cut
# while parsing (400); at the default, 1,024 parts, about Starlette's 1,000.
FORM_PARTS_HEADROOM = 2

# (setting, unit) that must not exceed (setting, unit), and why.
_TOGETHER = (
    (
        ("max_batch_images", ""),
        ("max_queue", ""),
        "a full batch would never fit the model's queue, and would be answered 503 forever",
    ),
    (
        ("max_batch_images", ""),
        ("max_decode_queue", ""),
        "a full batch of photos would never fit the decoding queue, and would be answered 503 "
        "forever",
    ),
    (
        ("max_upload_bytes", ""),
        ("max_inflight_bytes", ""),
        "the largest upload allowed would never be admitted",
    ),
    (
        ("max_requests", ""),
        ("max_connections", ""),
        "uvicorn would refuse connections in plain text before the service's own JSON 503",
    ),
    (
        ("batch_max_wait_ms", "ms"),
        ("inference_timeout_s", "s"),
        "every request would time out waiting for its batch",
    ),
    (
        ("batch_gather_ms", "ms"),
        ("inference_timeout_s", "s"),
        "every request would time out waiting for its batch",
    ),
    (
        ("inference_timeout_s", "s"),
        ("graceful_timeout_s", "s"),
        "a shutdown would cut off predictions still allowed to run",
    ),
)
_SECONDS = {"ms": 1e-3, "s": 1.0}
_UNITS = {("", ""): "", ("ms", "s"): " (milliseconds against seconds)", ("s", "s"): ""}


@lru_cache
def get_settings() -> Settings:
    return Settings()


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2/v1 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def torch_threads_for(settings: Settings) -> int:
    """Intra-op threads so that threads x workers never exceeds the CPUs we may use, leaving
    one CPU per worker to its event loop where there are several (on 2 CPUs, 2 torch threads
    fought the event loop and wrk for the cores: bench/results/2cpu-epyc-shared.md)."""
    if settings.torch_threads:
        return settings.torch_threads
    per_worker = available_cpus() // settings.workers
    return max(1, per_worker - 1 if per_worker > 1 else per_worker)
