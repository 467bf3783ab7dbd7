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
