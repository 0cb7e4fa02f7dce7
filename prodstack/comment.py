"""`prodstack comment`: one pull-request comment from the diffs of several stacks.

`.github/workflows/plan.yml` saves, for each cloud stack and the VPS profile, what
`prodstack diff --format json` printed (``ID.diff.json``), its stderr and exit code
(``ID.diff.err``, ``ID.diff.exit``) and the itemised cost (``ID.cost.md``) in one folder.
This turns them into:

- the comment: the marker, ONE summary table (a row per stack or profile: resources
  added, changed, replaced and removed, the stateful risks, the rollouts, the monthly
  cost before and after), the merge gate's verdict, then each section with its risks in
  full and everything else folded, cut to share ``--max-chars`` (the risks never are);
- the full report (``--full``) for the job summary and the artifact: the same table,
  every diff uncut and the itemised costs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from prodstack import planfile
from prodstack.errors import UsageError

MARKER = "<!-- prodstack-plan -->"
# A comment a reviewer reads; GitHub itself refuses one over 65,536 characters.
DEFAULT_MAX_CHARS = 15_000
SECTION_ID = re.compile(r"^(stack-[A-Za-z0-9_-]{1,64}|profile-vps)$")
EXAMPLES = """examples:
  prodstack comment DIR stack-dev stack-prod profile-vps      # the comment, on stdout
  prodstack comment DIR stack-prod --full full.md --link https://github.com/o/r/actions/runs/1
  prodstack comment DIR stack-prod --base origin/main --head HEAD --max-chars 20000

DIR holds, for each ID, ID.diff.json (`prodstack diff --format json`), or ID.diff.err
and ID.diff.exit when the diff failed, and optionally ID.cost.md (`prodstack cost`).
"""


def _title_of(section_id: str) -> str:
    return ("VPS profile" if section_id == "profile-vps"
            else f"cloud stack `{section_id.removeprefix('stack-')}`")  # fmt: skip


def load_section(folder: Path, section_id: str) -> dict[str, Any]:
    """One section's saved files: the diff (or why it failed) and the itemised cost."""
    from prodstack import diff  # the CLI starts without it

    if not SECTION_ID.match(section_id):
        raise UsageError(f"section {section_id!r}: expected stack-NAME (letters, digits, - "
                         "and _) or profile-vps")  # fmt: skip
    section: dict[str, Any] = {"id": section_id, "title": _title_of(section_id)}
    path = folder / f"{section_id}.diff.json"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text.strip():
        try:
            result = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}: not JSON (line {error.lineno}); expected the output "
                             "of `prodstack diff --format json`") from None  # fmt: skip
        if not isinstance(result, dict) or result.get("format") != diff.FORMAT:
            raise UsageError(f"{path}: not a prodstack diff (expected \"format\": "
                             f"\"{diff.FORMAT}\")")  # fmt: skip
        section["diff"] = result
        section["title"] = diff.title(result)
    else:
        err = folder / f"{section_id}.diff.err"
        if not err.is_file():
            raise UsageError(f"{folder}: neither {section_id}.diff.json nor "
                             f"{section_id}.diff.err")  # fmt: skip
        code = folder / f"{section_id}.diff.exit"
        section["error"] = err.read_text(encoding="utf-8", errors="replace")
        exit_code = code.read_text().strip() if code.is_file() else ""
        section["exit"] = exit_code if exit_code.isdigit() else "?"
    cost = folder / f"{section_id}.cost.md"
    if cost.is_file():
        section["cost"] = cost.read_text(encoding="utf-8", errors="replace")
    return section


def _failed_row(section: dict[str, Any]) -> str:
    return (f"| {section['title']} | | | | | | | ⛔ prodstack diff failed "
            f"(exit {section['exit']}) |\n")


def _failed_text(section: dict[str, Any]) -> str:
    # The pull request's own text may be in it: it neither ends the block nor forges a marker.
    tail = "\n".join(section["error"].rstrip().splitlines()[-20:])
    tail = tail.replace("```", "'''").replace("<!--", "<! --")
    return (f"### prodstack diff: {section['title']}\n\n**prodstack diff failed** "
            f"(exit {section['exit']}):\n\n```\n{tail}\n```\n\n")


def _table(sections: list[dict[str, Any]]) -> str:
    from prodstack import diff  # the CLI starts without it

    return diff.TABLE_HEADER + "".join(
        diff.table_row(s["diff"]) if "diff" in s else _failed_row(s) for s in sections)


def blocked(sections: list[dict[str, Any]]) -> list[str]:
    """`cloud stack `prod`: 1 stateful resource(s) replaced`: what the gate blocks on."""
    return [f"{s['title']}: " + "; ".join(s["diff"]["blocking"]["reasons"])
            for s in sections if s.get("diff", {}).get("blocking", {}).get("reasons")]


def _gate(sections: list[dict[str, Any]]) -> str:
    gated = [s for s in sections if s.get("diff", {}).get("blocking")]
    if not gated:
        return ""
    words = ",".join(dict.fromkeys(w for s in gated for w in s["diff"]["blocking"]["fail_on"]))
    reasons = blocked(sections)
    if reasons:
        return (f"**⛔ The merge gate (`--fail-on {words}`) blocks this pull request:** "
                + "; ".join(reasons) + ".\n\n")
    names = ", ".join(s["title"] for s in gated)
    return f"Merge gate (`--fail-on {words}` on {names}): passes.\n\n"


def _header(refs: str, link: str | None, *, full: bool) -> str:
    where = f"[job summary]({link})" if link else "job summary"
    lines = [MARKER, "## prodstack plan", ""]
    said = (f"Infrastructure changes of this pull request, {refs}, planned offline by "
            "`prodstack` (no cloud account, no host). " if refs else
            "Planned offline by `prodstack` (no cloud account, no host). ")  # fmt: skip
    if full:
        said += "The whole diffs, uncut, and the itemised monthly costs."
    else:
        said += (f"Risks are shown in full; the rest is folded. **Whole diffs and itemised "
                 f"costs: the {where}** and the run's `prodstack-plan` artifact.")
    return "\n".join(lines + [said, "", ""])


def _section_marker(section: dict[str, Any]) -> str:
    return f"<!-- prodstack-plan:{section['id']} -->\n"


def render(sections: list[dict[str, Any]], *, refs: str = "", link: str | None = None,
           max_chars: int = DEFAULT_MAX_CHARS) -> str:  # fmt: skip
    """The comment: every section's summary and risks, the rest cut to share ``max_chars``:
    the shortest sections first, each up to an equal share of what is left."""
    from prodstack import diff  # the CLI starts without it

    head = _header(refs, link, full=False) + _table(sections) + "\n" + _gate(sections)
    texts: dict[str, str] = {}
    ok = [s for s in sections if "diff" in s]
    for s in sections:
        if "diff" not in s:
            texts[s["id"]] = _failed_text(s)
    room = max_chars - len(head) - sum(len(_section_marker(s)) + 1 for s in sections) \
        - sum(len(t) for t in texts.values())
    whole = {s["id"]: diff.render_markdown(s["diff"], max_chars=10**12, table=False) for s in ok}
    ok.sort(key=lambda s: len(whole[s["id"]]))
    for i, s in enumerate(ok):
        share = room // (len(ok) - i)
        text = whole[s["id"]] if len(whole[s["id"]]) <= share else \
            diff.render_markdown(s["diff"], max_chars=max(share, 0), table=False)
        texts[s["id"]] = text
        room -= len(text)
    return head + "".join(_section_marker(s) + texts[s["id"]] + "\n" for s in sections)


def render_full(sections: list[dict[str, Any]], *, refs: str = "") -> str:
    """The job summary: the table, every diff uncut, each with its itemised cost."""
    from prodstack import diff  # the CLI starts without it

    out = [_header(refs, None, full=True), _table(sections), "\n", _gate(sections)]
    for s in sections:
        out.append(_section_marker(s))
        out.append(diff.render_markdown(s["diff"], max_chars=10**12, table=False)
                   if "diff" in s else _failed_text(s))  # fmt: skip
        if "cost" in s:
            out.append(f"\n<details><summary>Itemised monthly cost with this pull request: "
                       f"{s['title']}</summary>\n\n{s['cost'].rstrip()}\n\n</details>\n")
        out.append("\n")
    return "".join(out)


def _refs(base: str | None, head: str | None) -> str:
    if not (base and head):
        return ""
    from prodstack import gitrefs

    repo = gitrefs.repository_root(Path.cwd())
    shas = (gitrefs.resolve(repo, base, "--base"), gitrefs.resolve(repo, head, "--head"))
    return f"`{base}` ({shas[0][:7]}) → `{head}` ({shas[1][:7]})"


def cmd_comment(args: argparse.Namespace) -> int:
    if args.max_chars < 2000:
        raise UsageError(f"--max-chars {args.max_chars}: must be at least 2000")
    if not args.dir.is_dir():
        raise UsageError(f"{args.dir}: no such folder (the saved diffs)")
    if len(set(args.ids)) != len(args.ids):
        raise UsageError("each section ID once")
    sections = [load_section(args.dir, i) for i in args.ids]
    refs = _refs(args.base, args.head)
    text = render(sections, refs=refs, link=args.link, max_chars=args.max_chars)
    if args.full:
        planfile.write_text(args.full, render_full(sections, refs=refs))
    if args.format == "json":
        sys.stdout.write(json.dumps({"comment": text, "chars": len(text),
                                     "blocked": blocked(sections)}, indent=1) + "\n")
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any, subcommand: Any) -> None:
    """Add ``comment`` to the CLI (``subcommand`` is cli._subcommand)."""
    p = subcommand(sub, "comment", "one pull-request comment from the saved diffs",
                   "Assemble the pull-request comment from the diffs saved by plan.yml: one "
                   "summary table, the merge gate, every risk, the rest folded and cut to "
                   "fit; --full writes the uncut report for the job summary.", EXAMPLES)
    p.add_argument("dir", type=Path, metavar="DIR", help="the folder of saved diffs")
    p.add_argument("ids", nargs="+", metavar="ID", help="stack-NAME or profile-vps, in order")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, metavar="N",
                   help=f"the comment's size (default {DEFAULT_MAX_CHARS}); the summary "
                   "and every risk row are kept even over it")
    p.add_argument("--full", type=Path, metavar="FILE", help="also write the uncut report")
    p.add_argument("--link", metavar="URL", help="where the uncut report is (the run's URL)")
    p.add_argument("--base", metavar="REF", help="the base ref, named in the comment")
    p.add_argument("--head", metavar="REF", help="the head ref, named in the comment")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.set_defaults(func=cmd_comment)
