"""The documentation holds together: every relative link and every `docs/...` path in the
repository's Markdown files leads to a file of the repository (not to an output that git
ignores), every anchor to a heading; the docs index lists every page; the README stays a
front door and docs/ a reference of bounded size; the pages speak only of the project; every
training command shown with an optimiser is the recommended recipe for its scale, as the code
states it; every `g2lstm-*` command named is a console script of setup.py, and every flag shown
after one is in its `--help`; and every fenced Python example compiles and calls the
project's functions with arguments their signatures accept."""
import ast
import functools
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from conftest import REPO
from fairseq_g2lstm.data.next_commands import PAPER_IWSLT14, PAPER_WMT14
from fairseq_g2lstm.data.prepare_lm import PAPER_PTB
from g2lstm_runtime.folder import FORMAT as MODEL_FOLDER_FORMAT

README_MAX_LINES = 150
DOCS_MAX_LINES = 1800  # docs/*.md together: a reference, not a notebook
ENTRY_POINT = re.compile(r'"(g2lstm-[\w-]+) = ([\w.]+):(\w+)"')
COMMAND_NAME = re.compile(r"(?<![\w/.-])g2lstm-[a-z0-9][a-z0-9-]*[a-z0-9](?![\w/.-])")
FLAG = re.compile(r"--[A-Za-z0-9][\w-]*")
PYTHON_FENCE = re.compile(r"^\s*```\s*python\s*$")
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


def python_blocks(text: str) -> Iterator[Tuple[int, str]]:
    """(line number of the opening fence, source) of every ```python block."""
    block, start = None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if block is None:
            if PYTHON_FENCE.match(line):
                block, start = [], number
        elif FENCE.match(line):
            yield start, "\n".join(block)
            block = None
        else:
            block.append(line)


def doc_pages() -> List[str]:
    """The user docs: the README and docs/ (the example folders have their own READMEs)."""
    return [name for name in markdown_files() if name == "README.md" or name.startswith("docs/")]


def console_scripts() -> Dict[str, Tuple[str, str]]:
    """setup.py's g2lstm-* console scripts: name -> (module, function)."""
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    return {name: (module, function) for name, module, function in ENTRY_POINT.findall(setup)}


def not_commands() -> Set[str]:
    """g2lstm-* words that name something other than a command: the benchmark's model rows and
    the model folder's format."""
    throughput = (REPO / "benchmarks" / "throughput.py").read_text(encoding="utf-8")
    return set(re.findall(r'ModelSpec\("(g2lstm-[\w-]+)"', throughput)) | {MODEL_FOLDER_FORMAT}


@functools.lru_cache(maxsize=None)
def help_flags(name: str) -> Set[str]:
    """The flags a console script's --help lists, from the entry point as pip's script calls it."""
    module, function = console_scripts()[name]
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; sys.exit({function}())"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code, "--help"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{name} --help: {proc.stderr[-500:]}"
    return set(FLAG.findall(proc.stdout))


def resolve(dotted: str) -> Optional[Any]:
    """The object a dotted name of the project's packages names, or None where it is not ours."""
    if not dotted.startswith(("fairseq_g2lstm", "g2lstm_runtime")):
        return None
    module, _, attribute = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return getattr(importlib.import_module(module), attribute)


def call_mismatches(source: str) -> List[str]:
    """Calls in an example of the project's functions that their signatures do not accept.

    Names come from the example's `from PACKAGE import NAME` lines; a call `NAME(...)` or
    `NAME.attr(...)` is bound against the signature with its positional count and keywords."""
    tree, imported, problems = ast.parse(source), {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or any(isinstance(arg, ast.Starred) for arg in node.args) \
                or any(keyword.arg is None for keyword in node.keywords):
            continue  # *args or **kwargs: the count is not known
        function, path = node.func, []
        while isinstance(function, ast.Attribute):
            path.insert(0, function.attr)
            function = function.value
        if not isinstance(function, ast.Name) or function.id not in imported or len(path) > 1:
            continue
        target = resolve(imported[function.id])
        for attribute in path:
            target = getattr(target, attribute, None)
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        keywords = {keyword.arg: None for keyword in node.keywords if keyword.arg}
        try:
            signature.bind(*[None] * len(node.args), **keywords)
        except TypeError as error:
            problems.append(f"line {node.lineno}: {ast.unparse(node.func)}(...): {error}")
    return problems


def command_segments(block: str) -> Iterator[List[str]]:
    """The words of each command in a fenced block: continuation lines joined, a `$ ` prompt,
    comments, pipes, `&&` and `;` cut, synopsis brackets and `=values` dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)
        for segment in re.split(r"\|\|?|&&|;", line):
            try:
                words = shlex.split(segment, comments=True)
            except ValueError:
                words = segment.split(" #", 1)[0].split()
            words = [word.strip("[]()") for word in words]
            while words and (words[0] == "time" or re.match(r"\w+=", words[0])):
                words = words[1:]
            if words:
                yield words


def shown_commands(text: str) -> Iterator[Tuple[str, List[str]]]:
    """(console script, the flags shown after it) for every g2lstm-* command in a fenced block."""
    for block in code_blocks(text):
        for words in command_segments(block):
            if COMMAND_NAME.fullmatch(words[0]):
                flags = [word.split("=", 1)[0] for word in words[1:] if FLAG.fullmatch(word.split("=", 1)[0])]
                yield words[0], flags


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
    shell = "```bash\n$ time g2lstm-compress IN.pt OUT.pt --method svd [--rank K] \\\n    --scope=all | head  # --no\n```\n"
    assert list(shown_commands(shell)) == [("g2lstm-compress", ["--method", "--rank", "--scope"])]
    assert COMMAND_NAME.findall("run `g2lstm-gates`, not /tmp/g2lstm-gpu-check or --g2lstm-args") == ["g2lstm-gates"]
    example = "```python\nprint(1)\n```\n\n```bash\nnot python(\n```\n"
    assert list(python_blocks(example)) == [(1, "print(1)")]
    call = "from fairseq_g2lstm.data.fingerprint import corpus_fingerprint\ncorpus_fingerprint('a', 'de', 'en', 'x')"
    assert len(call_mismatches(call)) == 1 and call_mismatches(call.replace(", 'x'", "")) == []


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


def test_the_docs_stay_a_reference_of_bounded_size():
    lines = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (REPO / "docs").glob("*.md")}
    assert sum(lines.values()) <= DOCS_MAX_LINES, sorted(lines.items(), key=lambda item: -item[1])


def test_every_command_named_is_a_console_script():
    scripts, others = set(console_scripts()), not_commands()
    assert len(scripts) >= 12 and "g2lstm-serve" in scripts
    unknown = []
    for name in doc_pages():
        for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), 1):
            unknown += [f"{name}:{number}: {word}" for word in COMMAND_NAME.findall(line)
                        if word not in scripts and word not in others]
    assert unknown == []


def test_every_flag_shown_after_a_command_is_in_its_help():
    checked, unknown = 0, []
    scripts = console_scripts()
    used = {command for name in doc_pages() for command, _ in shown_commands((REPO / name).read_text(encoding="utf-8"))}
    with ThreadPoolExecutor(max_workers=4) as pool:  # the --help runs start Python and fairseq
        list(pool.map(help_flags, sorted(used & set(scripts))))
    for name in doc_pages():
        for command, flags in shown_commands((REPO / name).read_text(encoding="utf-8")):
            if command not in scripts:
                continue  # the test above names it
            known = help_flags(command)
            unknown += [f"{name}: {command} {flag}" for flag in flags if flag not in known]
            checked += len(flags)
    assert unknown == []
    assert checked >= 30


def test_every_python_example_compiles_and_calls_the_project_as_it_is():
    compiled, problems = 0, []
    for name in doc_pages():
        for line, source in python_blocks((REPO / name).read_text(encoding="utf-8")):
            compile(source, f"{name}:{line}", "exec")
            problems += [f"{name}:{line}: {problem}" for problem in call_mismatches(source)]
            compiled += 1
    assert problems == []
    assert compiled >= 5


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
    assert checked >= 5  # recipes.md (translation, language model; their one home in docs/) and the examples
