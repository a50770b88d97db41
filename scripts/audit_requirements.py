"""Audit requirements.lock for known vulnerabilities: pip-audit first, PyPI's project data after.

    python scripts/audit_requirements.py requirements.lock --require pillow --require starlette

pip-audit looks each pinned release up in PyPI's per-release JSON (`/pypi/NAME/VERSION/json`),
whose `vulnerabilities` come from the Python advisory database (PYSEC, GHSA). Some registries
serve only the per-project document (`/pypi/NAME/json`); there pip-audit finds nothing and skips
every package. For those, this script reads the per-project document instead, whose
`vulnerabilities` are those of the latest release: a pin equal to the latest release is audited
that way, an older pin cannot be and is listed as unaudited.

Exit status 1: a known vulnerability, a `--require`d package left unaudited, or no package
audited at all (no advisory data reachable). Unaudited older pins are listed, not fatal, unless
`--strict`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_URL = "https://pypi.org/pypi/{name}/json"


@dataclass
class Audit:
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # "name==version" -> ids
    by_pip_audit: set[str] = field(default_factory=set)
    by_project_data: set[str] = field(default_factory=set)
    unaudited: dict[str, str] = field(default_factory=dict)  # name -> why


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def run_pip_audit(lock: Path, audit: Audit) -> set[str]:
    """Run pip-audit (non-strict, JSON); record its findings; return the names it skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [
            sys.executable,
            "-m",
            "pip_audit",
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
            "--requirement",
            str(lock),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if not report.is_file():
            raise SystemExit(f"pip-audit failed (exit {done.returncode}):\n{done.stderr}")
        data = json.loads(report.read_text())
    skipped = set()
    for dep in data["dependencies"]:
        name = dep["name"].lower()
        if "skip_reason" in dep:
            skipped.add(name)
            continue
        audit.by_pip_audit.add(name)
        if dep.get("vulns"):
            audit.vulnerable[f"{name}=={dep['version']}"] = [v["id"] for v in dep["vulns"]]
    return skipped


def project_document(name: str) -> dict[str, object]:
    with urllib.request.urlopen(PROJECT_URL.format(name=name), timeout=30) as response:
        document: dict[str, object] = json.load(response)
        return document


def audit_from_project_data(name: str, version: str, audit: Audit) -> None:
    try:
        document = project_document(name)
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        audit.unaudited[name] = f"no project data: {exc}"
        return
    info = document.get("info")
    latest = str(info.get("version")) if isinstance(info, dict) else "?"
    if latest != version:
        audit.unaudited[name] = f"pinned {version}, advisory data only for the latest {latest}"
        return
    audit.by_project_data.add(name)
    vulns = document.get("vulnerabilities") or []
    assert isinstance(vulns, list)
    if vulns:
        audit.vulnerable[f"{name}=={version}"] = [str(v.get("id")) for v in vulns]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path, help="name==version lines, as lock_requirements.py")
    parser.add_argument(
        "--require", action="append", default=[], help="a package that must be audited"
    )
    parser.add_argument("--strict", action="store_true", help="fail on any unaudited package")
    args = parser.parse_args(argv)
    pins = read_lock(args.lock)
    audit = Audit()
    for name in sorted(run_pip_audit(args.lock, audit)):
        audit_from_project_data(name, pins[name], audit)

    audited = len(audit.by_pip_audit) + len(audit.by_project_data)
    print(
        f"{len(pins)} locked packages: {len(audit.by_pip_audit)} audited by pip-audit, "
        f"{len(audit.by_project_data)} from PyPI's data on their latest release, "
        f"{len(audit.unaudited)} unaudited"
    )
    for name, why in sorted(audit.unaudited.items()):
        print(f"  unaudited: {name}: {why}")
    for pin, ids in sorted(audit.vulnerable.items()):
        print(f"  VULNERABLE: {pin}: {', '.join(ids)}", file=sys.stderr)
    missing = sorted(set(map(str.lower, args.require)) & set(audit.unaudited))
    for name in missing:
        print(f"  required but unaudited: {name}", file=sys.stderr)
    failed = (
        bool(audit.vulnerable)
        or bool(missing)
        or audited == 0
        or (args.strict and bool(audit.unaudited))
    )
    if audited == 0:
        print("no advisory data could be reached: nothing was audited", file=sys.stderr)
    if not failed:
        print("no known vulnerabilities in the audited packages")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
