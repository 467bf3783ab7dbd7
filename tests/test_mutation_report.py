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


def test_a_run_of_some_modules_keeps_what_earlier_runs_found_for_the_others():
    from scripts.mutation import merge

    earlier = {
        "date": "2026-12-01",
        "modules": {"rides.stream.kpl": {"killed": 5}, "rides.stream.retry": {"killed": 3, "survived": 1}},
        "survivors": [survivor("rides.stream.retry", 1)],
    }  # written before the record knew each module's date
    latest = {
        "date": "2026-12-03",
        "modules": {"rides.stream.retry": {"killed": 4}, "rides.stream.events": {"killed": 7, "survived": 1}},
        "run_on": {"rides.stream.retry": "2026-12-03", "rides.stream.events": "2026-12-03"},
        "survivors": [survivor("rides.stream.events", 2)],
    }
    merged = merge(earlier, latest)
    assert merged["modules"] == {
        "rides.stream.events": {"killed": 7, "survived": 1},
        "rides.stream.kpl": {"killed": 5},
        "rides.stream.retry": {"killed": 4},  # this run's verdict, its old survivor gone
    }
    assert merged["run_on"] == {
        "rides.stream.events": "2026-12-03",
        "rides.stream.kpl": "2026-12-01",
        "rides.stream.retry": "2026-12-03",
    }
    assert [s["mutant"] for s in merged["survivors"]] == ["rides.stream.events.x_f__mutmut_2"]
    assert merge(None, latest) == latest
    text = format_mutation(merged)
    assert "Runs up to 2026-12-03: 17 of the 17 mutants" in text
    assert "| `rides.stream.kpl` | 2026-12-01 | 5 | 5 | 5 | 0 | 0 | 0 |" in text


def test_a_reason_written_after_the_run_reaches_its_survivor(tmp_path, monkeypatch):
    import scripts.mutation as mutation

    reasons = tmp_path / "reasons.yaml"
    reasons.write_text('"rides.stream.events:f: a < 2 → a <= 2": "equivalent: because"\n')
    monkeypatch.setattr(mutation, "REASONS", reasons)
    run = {"date": "d", "modules": {}, "survivors": [survivor("rides.stream.events", 2), survivor("rides.stream.x", 3)]}
    assert [s["reason"] for s in mutation.with_reasons(run)["survivors"]] == ["equivalent: because", None]
