"""The documentation: built from the sources with warnings as errors, its numbers generated
from experiments/results/ (never typed), README short. The docs' examples run as doctests
(``docs/*.md``, collected by pytest: see pyproject.toml)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A measured number: a decimal, or a count with a unit of time, speed, size or share.
MEASURED = re.compile(
    r"(?<![\w.-])\d+\.\d+(?![\w.])|\b\d[\d,]*(\.\d+)? ?(s|ms|us|x|%|MB|GB|minutes?|seconds?|"
    r"hours?|tests|img/s|s/epoch)(?![\w-])"
)
VERSION = re.compile(r"(Python|glibc) \d+\.\d+")  # a requirement, not a measurement


def prose(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of a page outside code blocks and generated blocks."""
    out, fenced, generated = [], False, False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if line.startswith("<!-- numbers:"):
            generated = True
        elif line.startswith("<!-- end numbers"):
            generated = False
        elif not (fenced or generated):
            out.append((number, line))
    return out


def test_the_numbers_are_the_results_files():
    """README's blocks and docs/_generated/ are what experiments/fill_numbers.py renders."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "fill_numbers.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_no_measured_number_is_typed_by_hand():
    """Counts, times, ratios and machines come from experiments/results/ (generated blocks,
    included files) or are not quoted: a line that mentions a measurement links to it."""
    typed = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in PAGES
        for number, line in prose(page)
        if MEASURED.search(VERSION.sub("", line)) and "experiments/results/" not in line
    ]
    assert typed == []


def test_the_checker_sees_the_drift_it_is_for():
    for line in ("163 tests, 16 minutes", "~7 s", "9.5 vs 10.6 s", "0.22x of Keras", "a 58%"):
        assert MEASURED.search(line), line
    for line in ("28x28 images", "batch 256", "seeds 0, 1 and 2", "Python 3.11 or newer"):
        assert not MEASURED.search(line.replace("3.11", "3")), line


def test_readme_is_a_newcomers_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def public_names() -> dict[str, str]:
    """``{what a guide may write: the reference's target}`` for every public name (the
    ``__all__`` of the modules docs/api.md documents, tests/test_api.py's PUBLIC), its
    classes' public members, and the top level's names unqualified (``Detector.detect``)."""
    import importlib
    import inspect

    api = (ROOT / "docs" / "api.md").read_text()
    names = {}
    for module_name in re.findall(r"^\.\. automodule:: (\S+)", api, re.M):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            owner = "aejax.core" if name == "TrainState" else module_name  # documented there
            spellings = [f"{owner}.{name}"] + ([name] if module_name == "aejax" else [])
            members = [""]
            if inspect.isclass(obj):
                members += [f".{a}" for a, m in vars(obj).items() if not a.startswith("_")
                            and (callable(m) or isinstance(m, property))]  # fmt: skip
            for member in members:
                for spelling in spellings:
                    names.setdefault(spelling + member, f"{owner}.{name}{member}")
    return names


INLINE_CODE = re.compile(r"(?<![`}])`([^`\n]+)`(?!`)")  # not a role's {py:obj}`...`


def test_each_public_name_a_guide_mentions_links_to_the_reference():
    # A guide's `aejax.Detector` or `AutoencoderDetector.fit(...)` is a {py:obj} role, so
    # that the page links it into the API reference (the built pages resolve every role:
    # test_the_docs_build_with_warnings_as_errors).
    names, unlinked = public_names(), []
    for page in PAGES:
        if page.name == "api.md":
            continue
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not code blocks
        for found in INLINE_CODE.finditer(prose):
            if re.split(r"[(\[]", found.group(1))[0] in names:
                unlinked.append(f"{page.name}: {found.group(0)}")
    assert len(names) > 150 and unlinked == []


@pytest.mark.slow  # imports every module (JAX, TensorFlow) to read its docstrings
def test_the_docs_build_with_warnings_as_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "html" / "api.html").stat().st_size > 50_000
    # Every name a guide links resolves: a reference Sphinx cannot find is code, not a link.
    xref = re.compile(r'(<a class="reference internal"[^>]*>)?<code class="xref py[^"]*">'
                      r'<span class="pre">([^<]*)</span>')  # fmt: skip
    unresolved, linked = [], 0
    for page in (tmp_path / "html").glob("*.html"):
        if page.name not in ("api.html", "genindex.html", "py-modindex.html"):
            for link, name in xref.findall(page.read_text()):
                linked += 1
                if not link:
                    unresolved.append(f"{page.name}: {name}")
    assert linked >= 15 and unresolved == []


# A path inside the repository a page names: a link target, or a file named in the text.
NAMED_PATH = re.compile(
    r"\]\(([^)#\s]+)|(?<![\w/.~])((?:aejax|docs|experiments|scripts|tests)/[\w./-]*\w)"
)


def test_every_file_a_page_names_exists_inside_the_repository():
    """A renamed script or results file, or a path outside the repository (``../shared``),
    fails here rather than in a reader's shell."""
    missing = []
    for page in [*PAGES, ROOT / "experiments" / "README.md"]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for link, named in NAMED_PATH.findall(line):
                path = link or named
                if link.startswith(("http://", "https://", "mailto:")) or "*" in path:
                    continue
                base = page.parent if link else ROOT
                target = (base / path).resolve()
                if not target.is_relative_to(ROOT) or not (
                    target.exists() or target.with_suffix(".md").exists()
                ):
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {path}")
    assert missing == []


def test_the_default_score_is_the_one_the_protocol_chose():
    """aejax.ood.DEFAULT is what experiments/ood_general.py chose on its runs (its results
    file), so neither can change without the other."""
    import json

    from aejax import ood

    result = json.loads((ROOT / "experiments" / "results" / "ood_general.json").read_text())
    assert ood.DEFAULT == result[0]["all_families_choice"]


def test_tflite_is_never_promised():
    """TFLite's converter refuses aejax's SavedModels (docs/deploying.md says why): every
    sentence that names it, in README, the docs and the docstrings, says it does not."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "aejax").rglob("*.py")]
    for path in files:
        text = " ".join(path.read_text().split())
        for sentence in re.split(r"(?<=[.:])\s", text):
            if re.search(r"tflite|tensorflow lite", sentence, re.I):
                assert re.search(r"\bnot\b|n't\b", sentence), f"{path.name}: {sentence}"


def commands_in(path: Path) -> list[tuple[int, str]]:
    """``(line number, command)`` of every ``python -m aejax.<tool>`` in a page's bash blocks
    (after ``.venv/bin/``, ``srun`` or ``&&``; a trailing comment dropped)."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = line.strip() == "```bash"
            continue
        if fenced:
            for part in line.split("#")[0].replace('"', " ").split("&&"):
                found = re.search(r"python -m (aejax[\w.]*)(.*)", part)
                if found:
                    out.append((number, f"{found.group(1)}{found.group(2)}".strip()))
    return out


def test_every_command_the_pages_show_parses():
    # Each command of README's and the guides' bash blocks, with the options it shows, is one
    # the command takes today (README's tour also runs end to end: test_readme_tour.py). The
    # placeholders of scaling_out.md (N hosts, host i) read as numbers.
    import importlib
    import shlex

    seen = 0
    for page in PAGES:
        for number, command in commands_in(page):
            tool, *argv = shlex.split(command.replace(" N ", " 2 ").replace(" i ", " 0 "))
            module = importlib.import_module(f"{tool}.__main__")
            try:
                module._parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"{page.name}:{number}: {command} does not parse")
            seen += 1
    assert seen >= 20
