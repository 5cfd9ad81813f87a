"""The lines the patch_summary callback prints when the playbook ends: counts, why the run stopped, the report paths."""

from ansible_collections.cms.patching.plugins.callback.patch_summary import summary_lines


def test_the_summary_says_why_the_run_stopped_and_where_the_report_is():
    result = {"summary": {"patched": 1, "rolled_back": 1, "not_patched": 4, "backed_up": 0, "total": 6},
              "headline": "Stopped after wave 1 of 3: 1 of 2 hosts failed (50%), above max_fail_percentage 10%; 4 instances not patched "
                          "(stopped_by_max_fail).",
              "paths": {"json": "/r/run/report.json", "csv": "/r/run/report.csv", "html": "/r/run/report.html"}}
    assert summary_lines(result) == [
        "instances: 6 (patched=1, rolled_back=1, not_patched=4)",
        "why: Stopped after wave 1 of 3: 1 of 2 hosts failed (50%), above max_fail_percentage 10%; 4 instances not patched "
        "(stopped_by_max_fail).",
        "report html: /r/run/report.html", "report json: /r/run/report.json", "report csv: /r/run/report.csv"]


def test_a_report_without_a_headline_prints_no_why_line():
    assert summary_lines({"summary": {"total": 0}, "paths": {"html": "/r/x.html"}}) == ["instances: 0 (none)", "report html: /r/x.html"]
