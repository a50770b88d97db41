"""Write the service's locked dependencies: every package `pip install .` brings, at the version
installed in this environment, one `name==version` a line (what `make lint-security` audits).

    python scripts/lock_requirements.py > requirements.lock
    python scripts/lock_requirements.py --check requirements.lock   # exit 1 if it is stale

Only the `dependencies` of pyproject.toml are followed (not the train or dev extras), through
each package's own requirements and the extras they ask for, with environment markers evaluated
for this interpreter and platform.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "digitsum"


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def locked(root: str = ROOT) -> dict[str, str]:
    """{canonical name: installed version} of the closure of `root`'s plain dependencies."""
    plain = map(Requirement, distribution(root).requires or [])
    return closure(r for r in plain if _wanted(r, set()))


def closure(requirements: Iterable[Requirement]) -> dict[str, str]:
    """{canonical name: installed version} of `requirements` and everything they require, with
    the extras each asks for (the lock's marker rules, _wanted)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            raise SystemExit(f"{requirement.name} is required but not installed") from None
        found[key[0]] = dist.version
        pending.extend(
            r for r in map(Requirement, dist.requires or []) if _wanted(r, set(requirement.extras))
        )
    return found


def render(packages: dict[str, str]) -> str:
    header = "# The service's dependencies as installed; make requirements.lock rewrites this.\n"
    return header + "".join(f"{name}=={packages[name]}\n" for name in sorted(packages))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", type=Path, help="compare with this file instead of printing")
    args = parser.parse_args(argv)
    return print_or_check(render(locked()), args.check, "make requirements.lock")


def print_or_check(text: str, check: Path | None, remake: str) -> int:
    """Print `text`, or with `check`, exit status 1 (saying to run `remake`) unless that file
    holds exactly `text`."""
    if check is None:
        sys.stdout.write(text)
        return 0
    if not check.is_file() or check.read_text() != text:
        print(f"{check} is stale: run `{remake}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
