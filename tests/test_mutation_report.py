"""The README's mutation section is the last `make mutation` run, and the report reads mutmut's
mutant names as mutmut writes them."""

from __future__ import annotations

import json

import pytest

from rides.readme_section import read_section
from scripts.mutation import README_MARKERS, RESULTS, ROOT, format_mutation, where


def test_the_readme_mutation_section_is_the_last_run():
    if not RESULTS.exists():
        pytest.skip("no make mutation run recorded yet")
    section = read_section(ROOT / "README.md", README_MARKERS)
    assert section == format_mutation(json.loads(RESULTS.read_text()))


def test_mutant_names_give_the_module_and_function():
    assert where("rides.stream.retry.x_is_retryable__mutmut_3") == ("rides.stream.retry", "is_retryable")
    assert where("rides.stream.kinesis_batch.xǁKinesisBatchǁreport__mutmut_12") == (
        "rides.stream.kinesis_batch",
        "KinesisBatch.report",
    )


def test_a_survivor_without_a_reason_says_so():
    run = {
        "date": "2026-12-02",
        "modules": {"rides.stream.retry": {"killed": 9, "survived": 1}},
        "survivors": [
            {
                "mutant": "rides.stream.retry.x_f__mutmut_1",
                "module": "rides.stream.retry",
                "function": "f",
                "status": "survived",
                "change": "a < b → a <= b",
                "reason": None,
            }
        ],
    }
    text = format_mutation(run)
    assert "10 of the 10 mutants of the modules below checked, 9 killed, 1 survived" in text
    assert "| `f` | `a < b → a <= b` | no test notices it yet |" in text


def test_a_generated_section_is_replaced_whole_and_a_missing_one_is_said(tmp_path):
    from rides.readme_section import write_section

    doc = tmp_path / "README.md"
    markers = ("<!-- x:start -->\n", "<!-- x:end -->")
    doc.write_text("intro\n<!-- x:start -->\nold\nlines\n<!-- x:end -->\nafter\n")
    assert write_section(doc, markers, "new\n")
    assert doc.read_text() == "intro\n<!-- x:start -->\nnew\n<!-- x:end -->\nafter\n"
    assert read_section(doc, markers) == "new\n"
    assert not write_section(doc, ("<!-- y:start -->\n", "<!-- y:end -->"), "z")
    with pytest.raises(ValueError, match="has no <!-- y:start -->"):
        write_section(doc, ("<!-- y:start -->\n", "<!-- y:end -->"), "z", required=True)


def test_what_the_tests_train_is_made_once_per_mutation_run_and_every_session_otherwise(tmp_path, monkeypatch):
    from tests.helpers import cached

    made = []

    def make() -> dict:
        made.append(1)
        return {"model": len(made)}

    monkeypatch.delenv("RIDES_TEST_CACHE", raising=False)
    assert cached("m", make) == {"model": 1} and cached("m", make) == {"model": 2}
    monkeypatch.setenv("RIDES_TEST_CACHE", str(tmp_path / "run"))
    assert cached("m", make) == {"model": 3} == cached("m", make)  # the second from the file
    assert len(made) == 3 and [p.name for p in (tmp_path / "run").iterdir()] == ["m.pickle"]


def survivor(module: str, n: int) -> dict:
    return {
        "mutant": f"{module}.x_f__mutmut_{n}",
        "module": module,
        "function": "f",
        "status": "survived",
        "change": f"a < {n} → a <= {n}",
        "reason": None,
    }


def test_a_verdict_stands_until_mutmut_checks_the_mutant_again_or_its_function_changes():
    from scripts.mutation import merge

    retry, kpl = "rides.stream.retry.x_backoff", "rides.stream.kpl.x_pack"
    first = merge(
        None,
        {f"{retry}__mutmut_{n}": s for n, s in ((1, "killed"), (2, "killed"), (3, "survived"))}
        | {f"{kpl}__mutmut_{n}": s for n, s in ((1, "killed"), (2, "not checked"))},
        {retry: "r1", kpl: "k1"},
        "2026-12-01",
        change=lambda name: "a < b → a <= b",
    )
    assert first["modules"] == {
        "rides.stream.kpl": {"killed": 1, "not checked": 1},
        "rides.stream.retry": {"killed": 2, "survived": 1},
    }
    assert first["verdicts"][retry] == {"hash": "r1", "killed": "1-2", "survived": "3"}
    assert [s["mutant"] for s in first["survivors"]] == [f"{retry}__mutmut_3"]
    # mutmut forgot everything (its test selection changed); a new test killed retry's survivor,
    # and kpl.pack was edited since: its old verdict no longer says anything
    second = merge(
        json.loads(json.dumps(first)),
        {f"{retry}__mutmut_{n}": s for n, s in ((1, "not checked"), (2, "not checked"), (3, "killed"))}
        | {f"{kpl}__mutmut_{n}": "not checked" for n in (1, 2)},
        {retry: "r1", kpl: "k2"},
        "2026-12-03",
        change=lambda name: pytest.fail("a known survivor's change is not looked up again"),
    )
    assert second["modules"] == {"rides.stream.retry": {"killed": 3}}
    assert second["survivors"] == [] and second["run_on"] == {"rides.stream.retry": "2026-12-03"}
    third = merge(
        second,
        {f"{retry}__mutmut_{n}": "not checked" for n in (1, 2, 3)} | {f"{kpl}__mutmut_1": "timeout"},
        {retry: "r1", kpl: "k2"},
        "2026-12-04",
    )
    assert third["modules"] == {"rides.stream.kpl": {"timeout": 1}, "rides.stream.retry": {"killed": 3}}
    assert third["run_on"] == {"rides.stream.kpl": "2026-12-04", "rides.stream.retry": "2026-12-03"}
    # retry survived again, but it was edited since: mutmut renumbered its mutants, so the
    # recorded change of "mutant 3" is not this one's
    again = {**{f"{retry}__mutmut_{n}": "killed" for n in (1, 2)}, f"{retry}__mutmut_3": "survived"}
    first_hashes = merge(None, again, {retry: "r1"}, "2026-12-05", change=lambda name: "old → text")
    edited = merge(first_hashes, again, {retry: "r2"}, "2026-12-06", change=lambda name: "new → text")
    assert [s["change"] for s in edited["survivors"]] == ["new → text"]


def test_a_module_recorded_only_as_counts_stands_until_mutmut_has_checked_as_many_of_its_mutants():
    from scripts.mutation import merge

    batch = "rides.stream.kinesis_batch.x_parse"
    legacy = {
        "date": "2026-12-01",
        "modules": {"rides.stream.kinesis_batch": {"killed": 5, "survived": 1, "not checked": 2}},
        "survivors": [survivor("rides.stream.kinesis_batch", 9)],
    }
    few = {f"{batch}__mutmut_{n}": "killed" if n < 3 else "not checked" for n in range(1, 9)}
    kept = merge(legacy, few, {batch: "h"}, "2026-12-03")
    assert kept["modules"] == legacy["modules"] and kept["survivors"] == legacy["survivors"]
    assert kept["run_on"] == {"rides.stream.kinesis_batch": "2026-12-01"} and kept["verdicts"] == {}
    many = {f"{batch}__mutmut_{n}": "killed" for n in range(1, 9)}
    replaced = merge(kept, many, {batch: "h"}, "2026-12-03")
    assert replaced["modules"] == {"rides.stream.kinesis_batch": {"killed": 8}} and replaced["survivors"] == []
    text = format_mutation(replaced)
    assert "Runs up to 2026-12-03: 8 of the 8 mutants" in text
    assert "| `rides.stream.kinesis_batch` | 2026-12-03 | 8 | 8 | 8 | 0 | 0 | 0 |" in text


def test_numbers_are_recorded_as_ranges():
    from scripts.mutation import numbers, ranges

    assert ranges([7, 1, 2, 3, 9, 10]) == "1-3,7,9-10" and numbers("1-3,7,9-10") == [1, 2, 3, 7, 9, 10]
    assert ranges([]) == "" and numbers("") == []


def test_function_hashes_are_read_from_mutmuts_files(tmp_path):
    from scripts.mutation import function_hashes

    meta = tmp_path / "rides" / "stream" / "decision" / "store.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"hash_by_function_name": {"xǁStoreǁput": "abc"}, "exit_code_by_key": {}}))
    assert function_hashes(tmp_path) == {"rides.stream.decision.store.xǁStoreǁput": "abc"}


def test_a_reason_written_after_the_run_reaches_its_survivor(tmp_path, monkeypatch):
    import scripts.mutation as mutation

    reasons = tmp_path / "reasons.yaml"
    reasons.write_text('"rides.stream.events:f: a < 2 → a <= 2": "equivalent: because"\n')
    monkeypatch.setattr(mutation, "REASONS", reasons)
    run = {"date": "d", "modules": {}, "survivors": [survivor("rides.stream.events", 2), survivor("rides.stream.x", 3)]}
    assert [s["reason"] for s in mutation.with_reasons(run)["survivors"]] == ["equivalent: because", None]
