"""`make mutation`: mutmut's mutants of rides/stream/ (what ships in the stream functions)
against the tests that exercise it, and the README's account of what survived.

mutmut (configured in pyproject.toml, `[tool.mutmut]`) changes one thing at a time (an operator,
a constant, a condition, a returned value) and runs the tests that reach the changed function;
a mutant no test notices is a survivor. Each survivor is listed in the README with the reason
it is left, from tests/mutation_reasons.yaml (keyed by the function and the changed line), or
as "no test notices it yet" when no reason was written down.

    python scripts/mutation.py                          # every module: hours on two cores
    python scripts/mutation.py rides.stream.retry ...   # these modules' mutants only
    python scripts/mutation.py --report                 # the report of the last run only
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "tests" / "mutation.json"
REASONS = ROOT / "tests" / "mutation_reasons.yaml"
README_MARKERS = ("<!-- mutation:start -->\n", "<!-- mutation:end -->")
MUTMUT = [sys.executable, "-m", "mutmut"]
LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")


def run_mutmut(children: int, modules: list[str]) -> None:
    """mutmut over these modules (all of rides/stream/ when none). The models the tests train
    are trained once for the run (tests.helpers.cached), not once per mutant."""
    import os
    import tempfile

    names = [f"{module}.*" for module in modules]
    with tempfile.TemporaryDirectory(prefix="rides-mutation-") as cache:
        subprocess.run(
            [*MUTMUT, "run", "--max-children", str(children), *names],
            cwd=ROOT,
            check=True,
            env={**os.environ, "RIDES_TEST_CACHE": cache},
        )


def statuses() -> dict[str, str]:
    """mutant name → its status in the last run."""
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, check=True, capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        match = LINE.match(line)
        if match:
            found[match["name"]] = match["status"].strip()
    return found


def change_of(name: str) -> str:
    """The mutant's change, as `old → new` (its diff's removed and added lines)."""
    out = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    removed = [line[1:].strip() for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:].strip() for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return f"{' / '.join(removed)} → {' / '.join(added)}"


def where(name: str) -> tuple[str, str]:
    """(module, function) of a mutant name like `rides.stream.retry.x_backoff__mutmut_3`."""
    stem = name.rsplit("__mutmut_", 1)[0]
    module, _, function = stem.rpartition(".")
    return module, re.sub(r"^x[ǁ_]", "", function).replace("ǁ", ".")


def with_reasons(r: dict) -> dict:
    """Each survivor's reason from tests/mutation_reasons.yaml as it is now, keyed by
    `module:function: change` (a survivor an earlier run found gets a reason written since)."""
    reasons = (yaml.safe_load(REASONS.read_text()) if REASONS.exists() else None) or {}
    for s in r["survivors"]:
        s["reason"] = reasons.get(f"{s['module']}:{s['function']}: {s['change']}")
    return r


def report(found: dict[str, str]) -> dict:
    by_module: dict[str, Counter] = {}
    survivors = []
    run = {where(name)[0] for name, status in found.items() if status != "not checked"}
    for name, status in sorted(found.items()):
        module, function = where(name)
        if module not in run:  # a module this run left out
            continue
        by_module.setdefault(module, Counter())[status] += 1
        if status in ("survived", "no tests", "suspicious"):
            change = change_of(name)
            survivors.append(
                {
                    "mutant": name,
                    "module": module,
                    "function": function,
                    "status": status,
                    "change": change,
                    "reason": None,
                }
            )
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return {
        "date": today,
        "modules": {module: dict(counts) for module, counts in sorted(by_module.items())},
        "run_on": {module: today for module in sorted(by_module)},
        "survivors": survivors,
    }


def merge(previous: dict | None, latest: dict) -> dict:
    """The modules the latest run checked as it found them, the others as their last run left
    them: mutmut forgets every verdict when its configuration changes, and a run of some modules
    must not erase what an earlier run of others found."""
    if not previous:
        return latest
    kept = {m: c for m, c in previous["modules"].items() if m not in latest["modules"]}
    modules = dict(sorted({**kept, **latest["modules"]}.items()))
    earlier = previous.get("run_on", {})
    return {
        "date": latest["date"],
        "modules": modules,
        "run_on": {m: latest["run_on"].get(m) or earlier.get(m) or previous["date"] for m in modules},
        "survivors": sorted(
            [s for s in previous["survivors"] if s["module"] in kept] + latest["survivors"],
            key=lambda s: (s["module"], s["mutant"]),
        ),
    }


def format_mutation(r: dict) -> str:
    """The README's mutation section, from tests/mutation.json only."""
    total = Counter()
    for counts in r["modules"].values():
        total.update(counts)
    mutants = sum(total.values())
    checked = mutants - total.get("not checked", 0)
    killed, survived = total.get("killed", 0), total.get("survived", 0) + total.get("no tests", 0)
    lines = [
        f"Runs up to {r['date']}: {checked:,} of the {mutants:,} mutants of the modules below checked, "
        f"{killed:,} killed, {survived} survived; a timeout is a mutant the tests did not finish with "
        "inside mutmut's CPU limit or the 120 s clock (a loop it made endless, or a slow test: not counted as killed)."
        if checked
        else "No mutants checked yet.",
        "",
        "| module | run on | mutants | checked | killed | timeout | survived | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    run_on = r.get("run_on", {})
    for module, counts in r["modules"].items():
        n = sum(counts.values())
        done = n - counts.get("not checked", 0)
        k, t = counts.get("killed", 0), counts.get("timeout", 0)
        left = counts.get("survived", 0) + counts.get("no tests", 0)
        when = run_on.get(module, r["date"])
        lines.append(f"| `{module}` | {when} | {n} | {done} | {k} | {t} | {left} | {done - k - t - left} |")
    if r["survivors"]:
        lines += ["", "| survivor | change | why it is left |", "|---|---|---|"]
        for s in r["survivors"]:
            change = s["change"].replace("|", "\\|")
            reason = (s["reason"] or "no test notices it yet").replace("|", "\\|")
            status = "" if s["status"] == "survived" else f" ({s['status']})"
            lines.append(f"| `{s['function']}`{status} | `{change}` | {reason} |")
    return "\n".join(lines) + "\n"


def write_readme(r: dict, readme: Path = ROOT / "README.md") -> None:
    from rides.readme_section import write_section

    write_section(readme, README_MARKERS, format_mutation(r))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", action="store_true", help="only the report of the last run")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("modules", nargs="*", help="only these modules' mutants (rides.stream.retry ...)")
    args = parser.parse_args()
    if not args.report:
        run_mutmut(args.children, args.modules)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    results = with_reasons(merge(previous, report(statuses())))
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_readme(results)
    print(format_mutation(results))


if __name__ == "__main__":
    main()
