"""The real terraform over infra/ (fmt -check, init, validate) where a CLI and the AWS provider
can be had (scripts/terraform_check.py finds them); skipped, with the reason, where not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "terraform_check.py"
spec = importlib.util.spec_from_file_location("terraform_check", SCRIPT)
terraform_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = terraform_check  # dataclasses look their module up there
spec.loader.exec_module(terraform_check)


def test_infra_is_formatted_and_valid_for_the_provider_found_here(capsys):
    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform fmt/validate: {why}")
    assert terraform_check.main([]) == 0, capsys.readouterr().out[-3000:]


def test_a_mirror_named_by_tf_plugin_mirror_is_used_and_an_empty_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_PLUGIN_MIRROR", str(tmp_path))
    assert terraform_check.find_mirror() is None
    (tmp_path / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0").mkdir(parents=True)
    assert terraform_check.find_mirror() == tmp_path
