"""The GitHub workflows: every action pinned to a commit, with the release it is in a comment."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_action_is_pinned_to_a_commit_sha_with_its_release_named():
    uses = [
        (path.name, line.strip())
        for path in sorted((ROOT / ".github" / "workflows").glob("*.yml"))
        for line in path.read_text().splitlines()
        if line.strip().startswith(("uses:", "- uses:"))
    ]
    assert uses
    for workflow, line in uses:
        assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), f"{workflow}: {line}"


def test_every_tool_the_make_targets_and_workflows_install_is_pinned():
    sources = [ROOT / "Makefile", *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]
    installs = [
        (path.name, line)
        for path in sources
        for line in path.read_text().splitlines()
        if "pip install" in line and "-r " not in line
    ]
    assert installs
    for source, line in installs:
        packages = line.split("pip install", 1)[1].split()
        named = [p for p in packages if not p.startswith("-")]
        assert named and all("==" in p for p in named), f"{source}: {line.strip()}"
