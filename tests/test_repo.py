"""The repository's promises: README's two commands, and CI running the second verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_two_commands():
    setup_and_run, setup_and_test = readme_commands()
    assert setup_and_run.startswith("bash scripts/setup.sh &&")
    assert (
        "aejax.train --arch dense" in setup_and_run
        and "aejax.eval --ood fashion_mnist" in setup_and_run
    )
    assert setup_and_test.startswith("bash scripts/setup.sh dev &&") and "pytest" in setup_and_test


def test_ci_runs_the_readme_test_command_verbatim():
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert readme_commands()[1] in ci
