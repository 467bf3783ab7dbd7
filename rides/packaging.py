"""The stream functions as a Lambda zip package: the zip variant of lambda_function/Dockerfile.

The code in it is exactly what the Dockerfile copies (its COPY lines are read, so the two
cannot drift), and with `dependencies` the hashed lock installed for Lambda's platform: the
python3.12 runtime on Amazon Linux 2023 (x86_64, glibc 2.34; the locked numpy needs 2.28, which
the 3.11 runtime's Amazon Linux 2 lacks). scikit-learn is left out unless asked for: with it the
package passes Lambda's 250 MB (ONNX models need none of it; the image has room for both). Terraform deploys it with
`package_type = "Zip"` (infra/); LocalStack's local executor takes the code alone, as its
interpreter brings the dependencies.

    python -m rides.packaging build/lambda.zip [--code-only] [--with-sklearn]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "lambda_function" / "Dockerfile"
# Lambda's limit on a function's unzipped package.
UNZIPPED_LIMIT = 250 * 1024 * 1024


def code_files(dockerfile: Path = DOCKERFILE) -> list[Path]:
    """The project files the image copies into the task root (not the lock files)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    files: list[Path] = []
    for line in text.splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        for source in line.split()[1:-1]:
            path = ROOT / source
            if source.endswith(".txt"):
                continue  # requirements: installed, not shipped
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            else:
                files.append(path)
    return files


def write_code(archive: zipfile.ZipFile, dockerfile: Path = DOCKERFILE) -> None:
    for path in code_files(dockerfile):
        archive.write(path, path.relative_to(ROOT).as_posix())


def code_zip() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        write_code(archive)
    return buffer.getvalue()


RUNTIME = "python3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def build(out: Path, *, dependencies: bool = True, sklearn: bool = False) -> int:
    """Write the package to `out`; returns its unzipped size. Fails above Lambda's limit."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="rides-zip-") as tmp,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        if dependencies:
            locks = ["requirements.lock.txt"] + (["requirements-sklearn.lock.txt"] if sklearn else [])
            for lock in locks:
                platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
                pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes"]
                version = RUNTIME.removeprefix("python")
                wheels = ["--implementation", "cp", "--python-version", version, "--only-binary=:all:"]
                requirements = ["--target", tmp, "-r", str(ROOT / "lambda_function" / lock)]
                subprocess.run([*pip, *platforms, *wheels, *requirements], check=True)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(tmp).as_posix())
        write_code(archive)
    size = sum(info.file_size for info in zipfile.ZipFile(out).infolist())
    if size > UNZIPPED_LIMIT:
        raise SystemExit(f"{out}: {size / 2**20:.0f} MB unzipped, over Lambda's 250 MB: use the image")
    return size


if __name__ == "__main__":
    args = sys.argv[1:]
    target = Path(next((a for a in args if not a.startswith("--")), "build/lambda.zip"))
    unzipped = build(target, dependencies="--code-only" not in args, sklearn="--with-sklearn" in args)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MB, {unzipped / 2**20:.1f} MB unzipped")
