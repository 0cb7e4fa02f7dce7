"""`prodstack comment`: plan.yml's pull-request comment, from diffs of the real program."""

from __future__ import annotations

import json

import pytest

from prodstack import comment, diff
from tests.plan.test_cli import one_line_error, prodstack

TABLE_HEADER = "| | add | change | replace | remove | risks | rollouts | monthly cost |"


@pytest.fixture(scope="module")
def saved(cloud_plan_files, tmp_path_factory):
    """What plan.yml saves: prod moved to another VPC under the merge gate, dev unchanged,
    and a VPS diff that failed with hostile stderr."""
    folder = tmp_path_factory.mktemp("sections")
    files = cloud_plan_files
    gated = prodstack("diff", str(files["prod"]), str(files["prod-vpc-cidr"]), "--format",
                      "json", "--fail-on", "risk")  # fmt: skip
    assert gated.returncode == 1, gated.stderr
    (folder / "stack-prod.diff.json").write_text(gated.stdout)
    same = prodstack("diff", str(files["dev"]), str(files["dev"]), "--format", "json")
    assert same.returncode == 0, same.stderr
    (folder / "stack-dev.diff.json").write_text(same.stdout)
    (folder / "stack-dev.cost.md").write_text("### Monthly cost: dev\n\n**$131.23 a month**\n")
    (folder / "profile-vps.diff.json").write_text("")
    (folder / "profile-vps.diff.err").write_text(
        "prodstack: planning\n```\n<!-- prodstack-plan -->\n" + "x" * 5000
        + "\nprodstack: --head HEAD: invalid configuration: size: (value not shown) is invalid\n")
    (folder / "profile-vps.diff.exit").write_text("2\n")
    return folder


def test_the_comment_opens_with_one_table_then_the_gate_then_each_section(saved, tmp_path):
    full = tmp_path / "full.md"
    proc = prodstack("comment", str(saved), "stack-dev", "stack-prod", "profile-vps",
                     "--full", str(full), "--link", "https://github.com/o/r/actions/runs/9")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith(comment.MARKER + "\n") and text.count(comment.MARKER) == 1
    assert len(text) <= comment.DEFAULT_MAX_CHARS
    assert text.count(TABLE_HEADER) == 1
    rows = text[text.index(TABLE_HEADER):].split("\n\n", 1)[0].splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| cloud stack `dev`", "| cloud stack `prod`",
                                                 "| VPS profile"]  # fmt: skip
    assert rows[2].endswith("| ⛔ prodstack diff failed (exit 2) |")
    gate = text.index("The merge gate (`--fail-on risk`) blocks this pull request:** cloud "
                      "stack `prod`: ")  # fmt: skip
    assert text.index(TABLE_HEADER) < gate < text.index("<!-- prodstack-plan:stack-dev -->")
    result = json.loads((saved / "stack-prod.diff.json").read_text())
    for risk in result["risks"]:
        assert f"| {risk['label']} `{risk['name']}` | **{risk['action']}** |" in text
    # The failed section's stderr stays inside its one code block, whatever it holds.
    failed = text[text.index("<!-- prodstack-plan:profile-vps -->"):]
    assert failed.count("```") == 2 and "size: (value not shown) is invalid" in failed
    assert text.count("<details>") == text.count("</details>")
    # The whole report: every diff uncut, each itemised cost.
    whole = full.read_text()
    assert diff.render_markdown(result, max_chars=10**12, table=False) in whole
    assert "**$131.23 a month**" in whole and len(whole) > len(text)
    as_json = json.loads(prodstack("comment", str(saved), "stack-prod", "--format",
                                   "json").stdout)  # fmt: skip
    assert as_json["blocked"] == ["cloud stack `prod`: " + "; ".join(diff.blocking(result,
                                                                                  {"risk"}))]


@pytest.mark.parametrize("ids, fragment", [
    (["stack-a`b"], "section 'stack-a`b'"),
    (["stack-x -->\n<!-- prodstack-plan"], "expected stack-NAME"),
    (["stack-" + "a" * 65], "expected stack-NAME"),
    (["profile-cloud"], "expected stack-NAME"),
    (["stack-missing"], "neither stack-missing.diff.json nor stack-missing.diff.err"),
    (["stack-prod", "stack-prod"], "each section ID once"),
])  # fmt: skip
def test_bad_sections_are_one_line_errors(saved, ids, fragment):
    one_line_error(prodstack("comment", str(saved), *ids), fragment)


def test_a_file_that_is_not_a_diff_is_refused_by_name(tmp_path):
    (tmp_path / "stack-prod.diff.json").write_text('{"format": "prodstack.plan"}')
    one_line_error(prodstack("comment", str(tmp_path), "stack-prod"),
                   "stack-prod.diff.json: not a prodstack diff")
    (tmp_path / "stack-prod.diff.json").write_text("{not json")
    one_line_error(prodstack("comment", str(tmp_path), "stack-prod"), "not JSON (line 1)")
    one_line_error(prodstack("comment", str(tmp_path / "nope"), "stack-prod"), "no such folder")
    one_line_error(prodstack("comment", str(tmp_path), "stack-prod", "--max-chars", "10"),
                   "--max-chars 10")
