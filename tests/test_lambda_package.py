"""The Lambda images cannot be built here: check that what each Dockerfile copies exists, that
the handler it names imports, and that the copied modules are all that handler needs."""

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Dockerfile (from the project root) → the entry point its CMD names
IMAGES = {
    "lambda_function/Dockerfile": "lambda_function.handler.lambda_handler",
    "lambda_function/Dockerfile.batch": "lambda_function.scoring_handler.lambda_handler",
    "web/Dockerfile": "rides.web.__main__.main",
}
# Other entry points an image serves (Terraform overrides the command)
ALSO_SERVES = {"lambda_function/Dockerfile": ["lambda_function.decision_handler.lambda_handler"]}
image = pytest.mark.parametrize("dockerfile", sorted(IMAGES))


def copy_sources(dockerfile: str) -> list[str]:
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:  # --from: out of another image
            parts = line.split()[1:]
            sources += [p for p in parts[:-1] if not p.startswith("--")]
    return sources


@image
def test_everything_the_dockerfile_copies_exists(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source


@image
def test_the_handler_it_names_exists(dockerfile):
    text = (ROOT / dockerfile).read_text()
    lambda_cmd = re.findall(r'CMD \["([\w.]+)"\]', text)
    module_cmd = re.findall(r'CMD \["python", "-m", "([\w.]+)"\]', text)
    # `python -m pkg` runs pkg/__main__.py: its `main`
    package = module_cmd and (ROOT / module_cmd[0].replace(".", "/")).is_dir()
    main_module = module_cmd and module_cmd[0] + (".__main__" if package else "")
    cmd = lambda_cmd[0] if lambda_cmd else f"{main_module}.main"
    module, function = cmd.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), function))
    assert cmd == IMAGES[dockerfile]


def _optional_imports(tree: ast.AST) -> set[ast.AST]:
    """Imports inside `try: … except ImportError` (features that need the training extras,
    which the image leaves out on purpose and reports clearly when used) or `if TYPE_CHECKING:`."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                optional.update(ast.walk(statement))
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers
        ):
            for statement in node.body:
                optional.update(ast.walk(statement))
    return optional


def copied_files(dockerfile: str) -> set[str]:
    """Every file the COPY lines bring in, folders expanded."""
    files: set[str] = set()
    for source in copy_sources(dockerfile):
        path = ROOT / source
        files |= {str(f.relative_to(ROOT)) for f in path.rglob("*") if f.is_file()} if path.is_dir() else {source}
    return files


def module_path(module: str) -> str:
    """rides.stream.decision.store → rides/stream/decision/store.py; a package → its __init__.py."""
    base = module.replace(".", "/")
    return f"{base}.py" if (ROOT / f"{base}.py").exists() else f"{base}/__init__.py"


@image
def test_copied_modules_cover_every_rides_import_of_the_handler(dockerfile):
    """Follow the imports from the handler: each rides module it needs is copied."""
    copied = copied_files(dockerfile)
    entries = [IMAGES[dockerfile], *ALSO_SERVES.get(dockerfile, [])]
    todo = [module_path(entry.rsplit(".", 1)[0]) for entry in entries]
    for path in todo:
        assert Path(path).name in {Path(s).name for s in copied}, f"{path} is not copied"
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        tree = ast.parse((ROOT / path).read_text())
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            if node in optional:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rides."):
                # the module and the packages it is in (each package's __init__.py runs first)
                parts = node.module.split(".")
                for needed in [module_path(".".join(parts[:n])) for n in range(2, len(parts) + 1)]:
                    if needed not in seen and (ROOT / needed).exists():  # (a namespace package has none)
                        seen.add(needed)
                        todo.append(needed)
    assert seen <= copied, seen - copied


def test_lambda_requirements_match_the_lock():
    lock = json.loads((ROOT / "Pipfile.lock").read_text())
    locked = {name.lower(): spec.get("version", "").lstrip("=") for name, spec in lock["default"].items()}
    for file in (
        "lambda_function/requirements.txt",
        "lambda_function/requirements-sklearn.txt",
        "lambda_function/requirements-batch.txt",
        "web/requirements.txt",
    ):
        for line in (ROOT / file).read_text().splitlines():
            if line and not line.startswith(("#", "-r ")):
                name, version = line.split("==")
                assert locked.get(name.lower()) == version, f"{name}: {version} vs lock {locked.get(name.lower())}"


def test_the_fast_path_does_not_import_mlflow_or_sklearn():
    code = (
        "import sys, lambda_function.handler, rides.stream.model;"
        "print(sorted(m for m in ('mlflow', 'sklearn', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_hashed_requirements_are_generated_from_the_current_lock():
    """Every image installs exactly the lock's versions and hashes, transitive packages too."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock_requirements.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    runtime = (ROOT / "lambda_function" / "requirements.lock.txt").read_text()
    for transitive in ("s3transfer==", "protobuf==", "jmespath=="):  # not in the hand-written list
        assert f"\n{transitive}" in runtime
    assert all("--hash=sha256:" in line for line in runtime.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize(
    "dockerfile", ["lambda_function/Dockerfile", "lambda_function/Dockerfile.batch", "web/Dockerfile"]
)
def test_every_image_installs_with_require_hashes_from_a_lock(dockerfile):
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        for command in line.split("pip install")[1:]:
            assert "--require-hashes" in command and ".lock.txt" in command, line


def test_the_zip_package_ships_exactly_the_code_the_image_copies():
    import io
    import zipfile

    from rides.packaging import code_files, code_zip

    names = set(zipfile.ZipFile(io.BytesIO(code_zip())).namelist())
    assert names == {p.relative_to(ROOT).as_posix() for p in code_files()}
    assert {"lambda_function/handler.py", "lambda_function/decision_handler.py", "rides/stream/consumer.py"} <= names
    assert "rides/stream/decision/store.py" in names and "rides/stream/taxi_zone_lookup.csv" in names
    assert not [n for n in names if n.endswith(".txt") or "__pycache__" in n]


def test_the_lambda_runtime_has_the_glibc_the_locked_wheels_need():
    """numpy >= 2.3 publishes manylinux_2_28 wheels only: glibc 2.28, which Amazon Linux 2 (the
    python3.11 runtime, glibc 2.26) lacks. The images and the zip use python3.12 (AL2023)."""
    from rides.packaging import PLATFORMS, RUNTIME

    lock = (ROOT / "lambda_function" / "requirements.lock.txt").read_text()
    numpy = tuple(int(x) for x in re.search(r"^numpy==(\d+)\.(\d+)", lock, re.M).groups())
    if numpy >= (2, 3):
        assert RUNTIME == "python3.12" and PLATFORMS[0] == "manylinux_2_28_x86_64"
        for dockerfile in ("Dockerfile", "Dockerfile.batch"):
            text = (ROOT / "lambda_function" / dockerfile).read_text()
            assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12" in text, dockerfile
