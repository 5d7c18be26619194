"""The documentation holds together: every relative link and every `docs/...` path in the
repository's Markdown files leads to a file of the repository (not to an output that git
ignores), every anchor to a heading; the docs index lists every page; the README stays a
front door; the pages speak only of the project; and every training command shown with an
optimiser is the recommended recipe for its scale, as the code states it."""
import re
import shlex
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from conftest import REPO
from fairseq_g2lstm.data.next_commands import PAPER_IWSLT14, PAPER_WMT14
from fairseq_g2lstm.data.prepare_lm import PAPER_PTB

README_MAX_LINES = 220
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*[\w/]")
FENCE = re.compile(r"^\s*(```|~~~)")
# Words that belong to the machinery around a project, not to it.
FOREIGN = re.compile(r"\bSPEC\b|/work/shared|device tool|carry=")
RECIPES = {PAPER_IWSLT14.arch: PAPER_IWSLT14, PAPER_WMT14.arch: PAPER_WMT14, PAPER_PTB.arch: PAPER_PTB}
# Pages whose training differs from the recipe on purpose, and say why (docs/recipes.md).
OWN_BUDGET = {"docs/demo.md", "docs/results.md", "examples/replicate/README.md", "examples/replicate/RESULTS.md"}


def markdown_files() -> List[str]:
    """The Markdown files a clone has: tracked, or new and not ignored."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted(name for name in out.splitlines() if (REPO / name).is_file())


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def code_blocks(text: str) -> Iterator[str]:
    block, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            if fenced:
                yield "\n".join(block)
            block, fenced = [], not fenced
        elif fenced:
            block.append(line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().replace("`", "").replace("*", "").lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    seen: Dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            seen[base] = seen.get(base, -1) + 1
            seen.setdefault(f"{base}-{seen[base]}" if seen[base] else base, 0)
    return set(seen)


def ignored(paths: List[str]) -> Set[str]:
    if not paths:
        return set()
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True)
    return set(proc.stdout.splitlines())


def broken_references(name: str) -> List[str]:
    """What in one Markdown file does not lead to a file of the repository."""
    source = REPO / name
    problems, targets = [], {}
    for number, line in prose_lines(source.read_text(encoding="utf-8")):
        for link in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("//"):
                continue  # http(s), mailto: not ours to check offline
            path, _, anchor = link.partition("#")
            target = (source.parent / path).resolve() if path else source
            targets.setdefault(target, []).append((number, link, anchor))
        for path in DOCS_PATH.findall(line):
            targets.setdefault((REPO / path).resolve(), []).append((number, path, ""))
    relative = {target: str(target.relative_to(REPO)) for target in targets if target.is_relative_to(REPO)}
    outputs = ignored(sorted(relative.values()))
    for target, uses in targets.items():
        for number, link, anchor in uses:
            where = f"{name}:{number}: {link}"
            if target not in relative:
                problems.append(f"{where}: outside the repository")
            elif not target.exists():
                problems.append(f"{where}: no such file")
            elif relative[target] in outputs:
                problems.append(f"{where}: an output that git ignores")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                problems.append(f"{where}: no heading with anchor #{anchor}")
    return sorted(set(problems))


def train_commands(text: str) -> Iterator[List[str]]:
    """The words of every fairseq-train command in the fenced code blocks."""
    for block in code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("fairseq-train "):
                yield shlex.split(line)


def flag_values(words: List[str]) -> Dict[str, str]:
    values = {}
    for index, word in enumerate(words):
        if word.startswith("--"):
            following = words[index + 1] if index + 1 < len(words) else ""
            values[word] = "" if following.startswith("--") else following
    return values


def test_the_checks_find_what_they_look_for(tmp_path):
    page = "# A page\n\n## Its `second` part (b)\n\n```bash\n[not a link](nowhere.md)\n```\n"
    (tmp_path / "page.md").write_text(page)
    assert anchors(tmp_path / "page.md") == {"a-page", "its-second-part-b"}
    assert LINK.findall("see [the page](docs/page.md#part) and ![fig](a/b.png)") == ["docs/page.md#part", "a/b.png"]
    assert [line for _, line in prose_lines(page)] == ["# A page", "", "## Its `second` part (b)", ""]
    assert DOCS_PATH.findall("in `docs/recipes.md`, then docs/figures/.") == ["docs/recipes.md", "docs/figures/"]
    command = "```bash\nfairseq-train data --arch g2lstm_iwslt \\\n    --lr 0.002 --fp16   # a comment\n```\n"
    assert [flag_values(words) for words in train_commands(command)] == [
        {"--arch": "g2lstm_iwslt", "--lr": "0.002", "--fp16": ""}]
    assert FOREIGN.search("as SPEC §4 says") and not FOREIGN.search("special SPECIFICATION")


@pytest.mark.parametrize("name", markdown_files())
def test_links_and_docs_paths_resolve(name):
    assert broken_references(name) == []


@pytest.mark.parametrize("name", markdown_files())
def test_pages_speak_only_of_the_project(name):
    text = (REPO / name).read_text(encoding="utf-8")
    found = [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if FOREIGN.search(line)]
    assert found == []


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make demo" in readme and "make test" in readme
    assert readme.rstrip().endswith("}\n```") and "@inproceedings" in readme.split("\n## ")[-1]
    for tool in ("g2lstm-gates", "g2lstm-compress", "g2lstm-compression-sweep", "g2lstm-average-checkpoints",
                 "g2lstm-prepare-lm", "g2lstm-export", "g2lstm-serve", "g2lstm-user-dir"):
        assert tool in readme, tool


def test_the_docs_index_lists_every_page():
    index = (REPO / "docs" / "README.md").read_text(encoding="utf-8")
    linked = {link.partition("#")[0] for link in LINK.findall(index)}
    pages = {path.name for path in (REPO / "docs").glob("*.md")} - {"README.md"}
    assert pages <= linked


def test_every_training_command_with_an_optimiser_is_its_scales_recipe():
    checked = 0
    for name in markdown_files():
        if name in OWN_BUDGET:
            continue
        for words in train_commands((REPO / name).read_text(encoding="utf-8")):
            flags = flag_values(words)
            if "--optimizer" not in flags or flags.get("--arch") not in RECIPES:
                continue
            recipe = flag_values(list(RECIPES[flags["--arch"]].train_args))
            assert {flag: flags.get(flag) for flag in recipe} == recipe, f"{name}: {shlex.join(words)}"
            checked += 1
    assert checked >= 6  # the README, recipes.md (twice), data.md (twice), lm.md, the examples
