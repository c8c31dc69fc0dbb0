"""Every documentation page and section that the repository names exists.

Source files (``*.py``, ``*.sh``, ``*.md``, ``*.tsv``) cite ``docs/<page>.md`` and
``docs/<page>.md#<section>``; Markdown pages link each other with relative links
(``[training](training.md#resuming)``, ``(#defects)``).
Each such page must exist, and each section anchor must be the GitHub-style slug of one of the page's
headings, so that no comment points at a document a user does not have.
"""

import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "datasets", "experiment", "__pycache__", ".pytest_cache", ".ruff_cache", ".whl"}
SUFFIXES = {".py", ".sh", ".md", ".tsv"}

CITATION = re.compile(r"(?<![\w.-])((?:\.\./)*docs/[\w./-]+\.(?:md|png))(#[\w-]+)?")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def source_files() -> list:
    files = []
    for path in ROOT.rglob("*"):
        if path.suffix in SUFFIXES and path.is_file() and \
                not SKIP_DIRS.intersection(path.relative_to(ROOT).parts[:-1]):
            files.append(path)
    return sorted(files)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation other than '-' and '_'
    removed, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    """The anchors of every heading of ``page`` outside code blocks (repeats get -1, -2, ... as on GitHub)."""
    seen, found, in_code = defaultdict(int), set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        match = None if in_code else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def references() -> dict:
    """{target path relative to the root: [(citing file, line, anchor or None), ...]}."""
    refs = defaultdict(list)
    for path in source_files():
        rel = path.relative_to(ROOT)
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for match in CITATION.finditer(line):
                cited = match.group(1)  # from the repository root, or relative ("../docs/...") in a page
                target = path.parent / cited if cited.startswith("../") else ROOT / cited
                anchor = match.group(2)[1:] if match.group(2) else None
                refs[_key(target)].append((str(rel), number, anchor))
            if path.suffix != ".md":
                continue
            for match in MD_LINK.finditer(line):
                link = match.group(1)
                if re.match(r"^[a-z]+:", link):
                    continue  # http(s), mailto
                page, _, anchor = link.partition("#")
                if page and not page.endswith(".md"):
                    continue
                target = (path.parent / page).resolve() if page else path
                refs[_key(target)].append((str(rel), number, anchor or None))
    return refs


def _key(target: Path) -> str:
    try:
        return str(target.resolve().relative_to(ROOT))
    except ValueError:
        return str(target)


REFERENCES = references()


def _params():
    for target in sorted(REFERENCES):
        yield pytest.param(target, id=target)


@pytest.mark.parametrize("target", list(_params()))
def test_every_cited_page_and_section_exists(target):
    page = ROOT / target
    cited_by = REFERENCES[target]
    assert page.is_file(), f"{target} does not exist; cited by {cited_by[:3]}"
    if page.suffix != ".md":
        return
    known = anchors(page)
    missing = [(where, line, anchor) for where, line, anchor in cited_by if anchor and anchor not in known]
    assert not missing, f"{target} has no section {missing[0][2]!r} (cited by {missing[0][:2]}); " \
                        f"its sections: {sorted(known)}"


def test_the_code_cites_its_documentation():
    """The scan finds what it should: code citations with sections, and the README's links to docs/."""
    cited = {target: {where for where, _, _ in refs} for target, refs in REFERENCES.items()}
    assert "filter_basis/errors.py" in cited["docs/design.md"]
    assert "super_resolution/model/common.py" in cited["docs/official-code.md"]
    assert "README.md" in cited["docs/index.md"] and "README.md" in cited["docs/method.png"]
    sections = {anchor for _, _, anchor in REFERENCES["docs/official-code.md"]}
    assert {"defects", "sr-evaluation", "loss_norm"} <= sections


def test_slugs_follow_github():
    assert slug("The approximation regulariser: --loss_norm") == "the-approximation-regulariser---loss_norm"
    assert slug("Deployment: `fuse`") == "deployment-fuse"
    assert slug("Your own images: Demo") == "your-own-images-demo"
    assert slug("Factor (SIC) layers") == "factor-sic-layers"


def test_no_source_cites_files_users_do_not_have():
    """No comment points at the design notes or reference files that live outside the repository."""
    # the notes' file and folder names, spelled apart so that these lines cite nothing themselves
    outside = [rf"{name}\.md" for name in ("DESIGN", "architectures")] + \
        ["reference" + sep + word for sep, word in (("/", "official"), (" ", "notes"))] + ["contract [0-9]"]
    stale = re.compile("|".join(outside))
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in source_files() if p.name != Path(__file__).name
            for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if stale.search(line)]
    assert hits == []


def test_method_figure_is_drawn_from_a_real_layer(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("method_figure", ROOT / "scripts" / "method_figure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    info = module.draw(tmp_path / "method.png")
    # 3 basis filters of 4 x 3 x 3 and an 8 x 9 projection, against the dense 8 x 12 x 3 x 3
    assert (info["weights"], info["dense_weights"]) == (3 * 4 * 9 + 8 * 9, 864)
    assert (tmp_path / "method.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
