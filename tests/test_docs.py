"""Every relative link and image in the README and docs/ points to a file of the repository, and every citation
of docs/reference.md names one of its sections."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    targets = [t.split("#")[0] for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if t and not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


# ---- citations of docs/reference.md: what the code cites must be in the repository ----

REFERENCE = ROOT / "docs" / "reference.md"
THIS = Path(__file__).resolve()  # holds broken citations on purpose, to test the check
CITING = ["README.md", "src", "tests", "benchmarks", "configs", "docs", "studies", "examples"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt"}
SECTION = r"§(\d+(?:\.\d+)*)"
CITATION = re.compile(r"docs/reference\.md\s+(" + SECTION + r"(?:(?:\s*,\s*|\s+and\s+)" + SECTION + r")*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? (.+)$", re.MULTILINE)
LINK_TO_REFERENCE = re.compile(r"\]\((?:docs/)?reference\.md#([^)\s]+)\)")
OUTSIDE = re.compile(r"reference-spec|ecosystem\.md|notes/style\.md|shared/notes", re.IGNORECASE)


def reference_sections(text: str) -> set[str]:
    """The numbers of the numbered headings of docs/reference.md ('## 3. ...' -> '3', '### 3.5 ...' -> '3.5')."""
    return {number for number, _ in HEADING.findall(text)}


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to hyphens."""
    titles = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in titles}


def citation_problems(text: str, sections: set[str], anchors: set[str]) -> list[str]:
    """Everything wrong with the citations in one file's text (empty when all resolve).

    A citation is ``docs/reference.md §N`` (or ``§N, §M`` / ``§N and §M``); each number must be a heading of
    docs/reference.md. A section sign that is not part of such a citation, and any mention of notes that live
    outside the repository, are problems too: a reader of the repository could not follow them.
    """
    problems = [f"cites a note outside the repository: {m.group(0)!r}" for m in OUTSIDE.finditer(text)]
    for match in CITATION.finditer(text):
        cited = re.findall(SECTION, match.group(1))
        problems += [f"cites §{n}, not a section of docs/reference.md" for n in cited if n not in sections]
    stray = CITATION.sub("", text)
    problems += [
        f"a section sign that cites no file: {m.group(0)!r}" for m in re.finditer(r"§\s?\d[\d.]*\d|§\s?\d", stray)
    ]
    problems += [f"links to a missing anchor: #{a}" for a in LINK_TO_REFERENCE.findall(text) if a not in anchors]
    return problems


def citing_files() -> list[Path]:
    """The text files that may cite docs/reference.md (all but the reference itself and this test)."""
    files = []
    for name in CITING:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [
            f
            for f in candidates
            if f.is_file() and f.suffix in SUFFIXES and f.resolve() not in (REFERENCE.resolve(), THIS)
        ]
    return files


def test_reference_headings_are_numbered_consistently():
    numbers = [number for number, _ in HEADING.findall(REFERENCE.read_text())]
    assert len(numbers) == len(set(numbers)), "a section number is used twice in docs/reference.md"
    for number in numbers:
        parent = number.rpartition(".")[0]
        assert not parent or parent in numbers, f"§{number} has no enclosing section §{parent}"


def test_every_citation_names_a_section_of_the_reference():
    reference = REFERENCE.read_text()
    sections, anchors = reference_sections(reference), heading_anchors(reference)
    problems = {
        str(path.relative_to(ROOT)): found
        for path in citing_files()
        if (found := citation_problems(path.read_text(errors="replace"), sections, anchors))
    }
    # the reference's own cross-references ("see §3.2") must resolve too
    inner = [f"§{n}" for n in re.findall(SECTION, reference) if n not in sections]
    if inner:
        problems["docs/reference.md"] = [f"refers to missing {s}" for s in inner]
    assert not problems, f"citations that do not resolve: {problems}"
    cited = sum(len(CITATION.findall(path.read_text(errors="replace"))) for path in citing_files())
    assert cited >= 20, f"only {cited} citations of docs/reference.md found; is the pattern still right?"


def test_the_check_catches_broken_citations():
    sections, anchors = {"1", "1.1", "3", "3.5"}, {"11-constants", "3-the-tks-loss"}
    good = "ramp (docs/reference.md §3.5); neuron docs/reference.md §1, §1.1 and §3 [x](reference.md#3-the-tks-loss)"
    assert citation_problems(good, sections, anchors) == []
    assert citation_problems("ramp (docs/reference.md §3.6)", sections, anchors) == [
        "cites §3.6, not a section of docs/reference.md"
    ]
    assert len(citation_problems("docs/reference.md §1, §9.9", sections, anchors)) == 1
    assert citation_problems("the teacher (reference-spec §3)", sections, anchors)[0].startswith("cites a note outside")
    assert citation_problems("byte layouts: ecosystem.md", sections, anchors)
    assert citation_problems("see §3.5 of the notes", sections, anchors) == [
        "a section sign that cites no file: '§3.5'"
    ]
    assert citation_problems("[x](reference.md#35-gone)", sections, anchors) == ["links to a missing anchor: #35-gone"]
