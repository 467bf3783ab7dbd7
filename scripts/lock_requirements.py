"""Write the images' hashed requirements from Pipfile.lock: every package an image installs,
transitive ones included, pinned to the lock's version with the lock's hashes, for
`pip install --require-hashes`.

    .venv/bin/python scripts/lock_requirements.py          # rewrite the *.lock.txt files
    .venv/bin/python scripts/lock_requirements.py --check  # exit 1 if one is out of date

The closure is read from the installed packages' metadata in the project's environment, with
markers evaluated for this interpreter (Linux, CPython 3.11: what the Lambda base image is).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# Each image's human-written list → its hashed lock. A lock covers its -r includes too.
IMAGES = {
    "lambda_function/requirements.txt": "lambda_function/requirements.lock.txt",
    "lambda_function/requirements-sklearn.txt": "lambda_function/requirements-sklearn.lock.txt",
    "lambda_function/requirements-batch.txt": "lambda_function/requirements-batch.lock.txt",
    "web/requirements.txt": "web/requirements.lock.txt",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level(path: Path) -> list[str]:
    names: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            names += top_level((path.parent / line[3:].strip()).resolve())
        elif line and not line.startswith("#"):
            names.append(line.split("==")[0])
    return names


def closure(names: list[str]) -> set[str]:
    """The packages these need, transitively, on this platform (no extras)."""
    seen: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return seen


def render(source: str, lock: dict) -> str:
    locked = {canonical(name): spec for name, spec in lock["default"].items()}
    lines = [
        f"# Generated from Pipfile.lock by scripts/lock_requirements.py for {source}: do not edit.",
        "# Every package the image installs, with the lock's hashes (pip install --require-hashes).",
    ]
    for name in sorted(closure(top_level(ROOT / source))):
        if name not in locked:
            raise SystemExit(f"{name} (needed by {source}) is not in Pipfile.lock's default packages")
        spec = locked[name]
        hashes = " ".join(f"--hash={h}" for h in spec["hashes"])
        lines.append(f"{name}{spec['version']} {hashes}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Fail if a lock file is out of date.")
    args = parser.parse_args()
    lock = json.loads((ROOT / "Pipfile.lock").read_text())
    stale = []
    for source, target in IMAGES.items():
        text = render(source, lock)
        path = ROOT / target
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(target)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"out of date (run scripts/lock_requirements.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
