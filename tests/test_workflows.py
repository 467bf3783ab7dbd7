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


def test_every_image_is_pinned_by_digest_or_built_from_a_digest_the_deploy_resolves():
    import re

    pinned = re.compile(r"@sha256:[0-9a-f]{64}$")
    for dockerfile in [*ROOT.glob("lambda_function/Dockerfile*"), ROOT / "web" / "Dockerfile"]:
        text = dockerfile.read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
        for image in re.findall(r"^FROM (\S+)", text, re.M):
            if image == "${BASE_IMAGE}":
                # scripts/deploy.sh builds with --build-arg BASE_IMAGE=<this tag>@<digest now>
                assert "BASE_IMAGE" in args and "@" not in args["BASE_IMAGE"], dockerfile
            else:
                name = image.removeprefix("${").removesuffix("}")
                assert pinned.search(args.get(name, image)), f"{dockerfile.name}: FROM {image} is not pinned by digest"
        assert "COPY --from=" not in text or all(
            source in {"lambda-adapter"} for source in re.findall(r"COPY --from=(\S+)", text)
        ), f"{dockerfile.name} copies from an image that is not a pinned stage"
    for path in (ROOT / "integration-test" / "docker-compose.yaml", ROOT / ".github" / "workflows" / "ci.yml"):
        for image in re.findall(r"^\s+image: (\S+)$", path.read_text(), re.M):
            if image.endswith(":local"):
                continue  # built here, from the pinned Dockerfile
            assert pinned.search(image), f"{path.name}: {image} is not pinned by digest"
    deploy = (ROOT / "scripts" / "deploy.sh").read_text()
    assert 'docker build --platform linux/amd64 --provenance=false --build-arg "BASE_IMAGE=${base}"' in deploy
