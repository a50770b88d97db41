"""Write the list of wheels the GPU check carries to the GPU machine (scripts/gpu_wheels.txt).

    python scripts/gpu_wheels.py > scripts/gpu_wheels.txt          # make gpu-wheels-list
    python scripts/gpu_wheels.py --check scripts/gpu_wheels.txt    # exit 1 if it is stale

The GPU machine (docs/gpu-check.md) runs Python 3.12 with torch, torchvision and a large set of
other packages preinstalled, and has no network: whatever else the check imports travels as
wheels (`make gpu-wheels` downloads them into .whl/), within the 64 MiB a call may carry.

What the check needs: the service and the trainer (pyproject's dependencies and its train
extra: progress bar, plots, the fonts of the synthetic glyphs) and what the check itself runs
(pytest for the CUDA tests, httpx for FastAPI's TestClient), each with its requirements, at the
versions installed here. What is not carried:
DEVICE_ROOTS and everything they require, which the device image holds (its versions, not
ours): torch and torchvision with the CUDA libraries, and the large binary packages numpy,
pillow, matplotlib, uvloop and opencv-python-headless (together about 100 MB as wheels; the
device's package list, .library/device/KINDS.md, names each). The rehearsal
(scripts/gpu_rehearsal.sh) installs the stand-in list (`--device`) into its venv in their place.
typing-extensions is carried although torch requires it: pydantic needs a recent one. Not
carried either (NOT_CARRIED): what the service imports only on first use and the check never
uses, to keep within the 64 MiB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The lock's closure rules and its --check, one copy of each.
from lock_requirements import closure as requirement_closure
from lock_requirements import print_or_check

CHECK_ROOTS = ("digitsum[train]", "pytest", "pytest-timeout", "httpx")
DEVICE_ROOTS = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "matplotlib",
    "uvloop",
    "opencv-python-headless",  # the photo pipeline (app/ink.py); its wheel alone is 55 MB
)
ALWAYS_CARRIED = frozenset({"typing-extensions"})
NOT_CARRIED = frozenset(
    {
        "pillow-heif",  # HEIC uploads (app.imaging imports it on the first one): 5.7 MB
    }
)


def closure(roots: tuple[str, ...]) -> dict[str, str]:
    """{canonical name: installed version} of `roots` and everything they require."""
    return requirement_closure(Requirement(root) for root in roots)


def carried() -> dict[str, str]:
    """What the check imports and the device image does not hold."""
    on_device = set(closure(DEVICE_ROOTS)) - ALWAYS_CARRIED
    needed = closure(CHECK_ROOTS)
    return {
        name: version
        for name, version in needed.items()
        if name not in on_device | NOT_CARRIED and name != "digitsum"
    }


def stand_in() -> dict[str, str]:
    """DEVICE_ROOTS at the versions installed here: the rehearsal's venv holds these."""
    found = closure(DEVICE_ROOTS)
    return {name: found[name] for name in DEVICE_ROOTS}


def render(packages: dict[str, str], what: str) -> str:
    header = f"# {what}; `make gpu-wheels-list` rewrites this (scripts/gpu_wheels.py).\n"
    return header + "".join(f"{name}=={packages[name]}\n" for name in sorted(packages))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", type=Path, help="compare with this file instead of printing")
    parser.add_argument(
        "--device",
        action="store_true",
        help="the device image's stand-in (DEVICE_ROOTS) instead of the carried wheels",
    )
    args = parser.parse_args(argv)
    text = (
        render(stand_in(), "What the GPU machine holds, as the rehearsal's venv installs it")
        if args.device
        else render(carried(), "The wheels scripts/gpu_check.sh carries to the GPU machine")
    )
    return print_or_check(text, args.check, "make gpu-wheels-list")


if __name__ == "__main__":
    raise SystemExit(main())
