"""`make mutation`: mutmut's mutants of rides/stream/ (what ships in the stream functions)
against the tests that exercise it, and the README's account of what survived.

mutmut (configured in pyproject.toml, `[tool.mutmut]`) changes one thing at a time (an operator,
a constant, a condition, a returned value) and runs the tests that reach the changed function;
a mutant no test notices is a survivor. Each survivor is listed in the README with the reason
it is left, from tests/mutation_reasons.yaml (keyed by the function and the changed line), or
as "no test notices it yet" when no reason was written down.

    python scripts/mutation.py                          # every module: hours on two cores
    python scripts/mutation.py rides.stream.retry ...   # these modules' mutants only
    python scripts/mutation.py --survivors              # the recorded survivors without a reason, again
    python scripts/mutation.py --report                 # the report of the last run only

mutmut forgets every verdict when its test selection changes; tests/mutation.json keeps each
mutant's last verdict while its function's source is unchanged, so runs of some modules (or of
the survivors after new tests) add up to the whole package.
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
    """mutmut over these modules or mutants (all of rides/stream/ when none). The models the
    tests train are trained once for the run (tests.helpers.cached), not once per mutant."""
    import os
    import tempfile

    names = [name if "__mutmut_" in name else f"{name}.*" for name in modules]
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
    """(module, function) of a mutant name like `rides.stream.retry.x_backoff__mutmut_3`, or of
    its function's name (`rides.stream.retry.x_backoff`)."""
    stem = name.rsplit("__mutmut_", 1)[0]
    module, _, function = stem.rpartition(".")
    return module, re.sub(r"^x[ǁ_]", "", function).replace("ǁ", ".")


def checked(counts: dict[str, int]) -> int:
    return sum(counts.values()) - counts.get("not checked", 0)


def with_reasons(r: dict) -> dict:
    """Each survivor's reason from tests/mutation_reasons.yaml as it is now, keyed by
    `module:function: change` (a survivor an earlier run found gets a reason written since)."""
    reasons = (yaml.safe_load(REASONS.read_text()) if REASONS.exists() else None) or {}
    for s in r["survivors"]:
        s["reason"] = reasons.get(f"{s['module']}:{s['function']}: {s['change']}")
    return r


SURVIVING = ("survived", "no tests", "suspicious")


def function_hashes(mutants: Path = ROOT / "mutants") -> dict[str, str]:
    """Each mutated function (`rides.stream.publish.xǁShardMapǁ__init__`) → mutmut's hash of its
    source: a verdict stands while the function it was found on is unchanged."""
    hashes = {}
    for meta in mutants.glob("rides/**/*.py.meta"):
        module = ".".join(meta.relative_to(mutants).with_suffix("").with_suffix("").parts)
        for function, digest in json.loads(meta.read_text()).get("hash_by_function_name", {}).items():
            hashes[f"{module}.{function}"] = digest
    return hashes


def ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] → "1-3,7": the record stays a line a function."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def numbers(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out += range(int(a), int(b or a) + 1)
    return out


def verdicts_of(found: dict[str, str], hashes: dict[str, str]) -> dict[str, dict[int, str]]:
    """mutmut's statuses by function: `module.function` → {mutant number: status}."""
    by_function: dict[str, dict[int, str]] = {}
    for name, status in found.items():
        stem, _, n = name.rpartition("__mutmut_")
        if stem in hashes:
            by_function.setdefault(stem, {})[int(n)] = status
    return by_function


def record_verdicts(by_function: dict[str, dict[int, str]], hashes: dict[str, str]) -> dict[str, dict]:
    out = {}
    for stem in sorted(by_function):
        statuses: dict[str, list[int]] = {}
        for n, status in by_function[stem].items():
            statuses.setdefault(status, []).append(n)
        out[stem] = {"hash": hashes[stem], **{status: ranges(ns) for status, ns in sorted(statuses.items())}}
    return out


def recorded(entry: dict) -> dict[int, str]:
    return {n: status for status, text in entry.items() if status != "hash" for n in numbers(text)}


def merge(previous: dict | None, found: dict[str, str], hashes: dict[str, str], today: str, change=None) -> dict:
    """This run's verdicts over the record's: a mutant mutmut has not checked (a run of other
    modules, or mutmut forgetting every verdict when its test selection changes) keeps the
    verdict the record holds for it, as long as its function's source is unchanged.

    A module the record holds only as counts (written before verdicts were kept per mutant)
    stays as it was until mutmut has checked as many of its mutants."""
    change = change or change_of
    previous = previous or {"modules": {}, "survivors": []}
    kept = previous.get("verdicts", {})
    by_function = verdicts_of(found, hashes)
    module_of = {stem: where(stem)[0] for stem in by_function}
    unchanged = {stem for stem in by_function if stem in kept and kept[stem]["hash"] == hashes[stem]}
    ran = {module_of[stem] for stem, current in by_function.items() if checked(Counter(current.values()))}
    for stem in unchanged:
        current = by_function[stem]
        for n, status in recorded(kept[stem]).items():
            if current.get(n) == "not checked":
                current[n] = status
    counts: dict[str, Counter] = {}
    for stem, current in by_function.items():
        counts.setdefault(module_of[stem], Counter()).update(current.values())
    kept_modules = {where(stem)[0] for stem in kept}
    legacy = {
        module: dict(c)
        for module, c in previous["modules"].items()
        if module not in kept_modules and checked(c) > checked(counts.get(module, Counter()))
    }
    fresh = {m for m, c in counts.items() if m not in legacy and checked(c)}
    modules = {**{m: dict(counts[m]) for m in fresh}, **legacy}
    earlier_survivors = {s["mutant"]: s for s in previous["survivors"]}
    survivors = [s for s in previous["survivors"] if s["module"] in legacy]
    for stem, current in sorted(by_function.items()):
        for n, status in sorted(current.items()):
            name = f"{stem}__mutmut_{n}"
            module, function = where(name)
            if status in SURVIVING and module in fresh:
                # mutmut renumbers an edited function's mutants: its recorded changes say nothing
                known = earlier_survivors.get(name) if stem in unchanged else None
                survivors.append(
                    {
                        "mutant": name,
                        "module": module,
                        "function": function,
                        "status": status,
                        "change": known["change"] if known else change(name),
                        "reason": None,
                    }
                )
    earlier_dates = previous.get("run_on", {})
    return {
        "date": today,
        "modules": dict(sorted(modules.items())),
        "run_on": {
            m: today if m in ran and m in fresh else earlier_dates.get(m, previous.get("date", today))
            for m in sorted(modules)
        },
        "survivors": sorted(survivors, key=lambda s: s["mutant"]),
        "verdicts": record_verdicts({s: v for s, v in by_function.items() if module_of[s] in fresh}, hashes),
    }


def format_mutation(r: dict) -> str:
    """The README's mutation section, from tests/mutation.json only."""
    total = Counter()
    for counts in r["modules"].values():
        total.update(counts)
    mutants, done_all = sum(total.values()), checked(total)
    killed, survived = total.get("killed", 0), total.get("survived", 0) + total.get("no tests", 0)
    lines = [
        f"Runs up to {r['date']}: {done_all:,} of the {mutants:,} mutants of the modules below checked, "
        f"{killed:,} killed, {survived} survived; a timeout is a mutant the tests did not finish with "
        "inside mutmut's CPU limit or the 120 s clock (a loop it made endless, or a slow test: not counted as killed)."
        if done_all
        else "No mutants checked yet.",
        "",
        "| module | run on | mutants | checked | killed | timeout | survived | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    run_on = r.get("run_on", {})
    for module, counts in r["modules"].items():
        n = sum(counts.values())
        done = checked(counts)
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
    parser.add_argument("--survivors", action="store_true", help="only the survivors the record lists, again")
    parser.add_argument("modules", nargs="*", help="only these modules' mutants (rides.stream.retry ...) or mutants")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    if args.survivors:  # after writing the tests that should kill them
        args.modules = [s["mutant"] for s in (previous or {}).get("survivors", []) if not s["reason"]]
        if not args.modules:
            sys.exit("the record lists no survivor without a reason")
    if not args.report:
        run_mutmut(args.children, args.modules)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    results = with_reasons(merge(previous, statuses(), function_hashes(), today))
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_readme(results)
    print(format_mutation(results))


if __name__ == "__main__":
    main()
