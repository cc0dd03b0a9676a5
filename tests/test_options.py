"""Every option of every command is checked against its declaration: this walks each
command's ``--help``, feeds every numeric option (and every model option of every
architecture) a negative number, a zero, a text and a NaN, and expects each value accepted
where the declaration allows it, otherwise one ``error:`` line, exit code 2, no traceback."""

import math
import re

import pytest

from aejax import cli, models
from aejax.data import __main__ as data_command
from aejax.eval import __main__ as eval_cli
from aejax.export import __main__ as export_cli
from aejax.score import __main__ as score_cli
from aejax.train import __main__ as train_cli

COMMANDS = {  # command: (module, the arguments it needs besides the option tried)
    "train": (train_cli, []),
    "eval": (eval_cli, []),
    "score": (score_cli, ["image.png"]),
    "export": (export_cli, ["--out", "detector"]),
    "data": (data_command, ["info", "mnist"]),
}
# Options that take text (names, paths, addresses) or a choice of words: not numbers.
TEXT = {
    "--arch", "--dataset", "--workdir", "--data-dir", "--out", "--ood", "--score", "--maps",
    "--coordinator-address", "--compute-dtype", "--platforms", "--raw-dir", "--mnist-pickle",
    "--format",
    "--model",  # NAME=VALUE: its values are tried below, against each model's declarations
}  # fmt: skip
VALUES = ("-1", "0", "abc", "nan")


def help_options(module, capsys) -> list[str]:
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    # The options' own lines ("  --lr LR   Adam ..."), not options the prose mentions.
    lines = capsys.readouterr().out
    return sorted(set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)", lines, re.M)))


def allowed(declared: cli.Numeric, text: str) -> bool:
    """What the declaration allows, worked out here from its fields."""
    if text in declared.words:
        return True
    if not re.fullmatch(r"-?\d+" if declared.integral else r"-?\d+(\.\d*)?|nan", text):
        return False
    value = float(text)
    low_ok = declared.low is None or (
        value > declared.low if declared.low_open else value >= declared.low
    )
    high_ok = declared.high is None or (
        value < declared.high if declared.high_open else value <= declared.high
    )
    return math.isfinite(value) and low_ok and high_ok


def assert_one_error_line(run, capsys, *fragments):
    with pytest.raises(SystemExit) as exit_:
        code = run()
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and all(f in err for f in fragments), err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_numeric_option_is_checked_against_its_declaration(name, capsys):
    module, needed = COMMANDS[name]
    parser = module._parser()
    numeric = 0
    for option in help_options(module, capsys):
        action = parser._option_string_actions[option]
        if action.nargs == 0 or option == "--help":
            continue  # a flag
        if isinstance(action.type, cli.Numeric):
            accepts = lambda text, declared=action.type: allowed(declared, text)  # noqa: E731
        elif action.choices and all(isinstance(c, int) for c in action.choices):
            accepts = lambda text, choices=action.choices: text in map(str, choices)  # noqa: E731
        else:
            assert option in TEXT, f"{name} {option}: a value of no declared kind"
            continue
        numeric += 1
        for text in VALUES:
            argv = [*needed, option, *[text] * (action.nargs if isinstance(action.nargs, int)
                                                else 1)]  # fmt: skip
            if accepts(text):
                parser.parse_args(argv)  # no SystemExit
            else:
                assert_one_error_line(lambda argv=argv: module.main(argv), capsys, option)
    assert numeric or name == "data"


@pytest.mark.parametrize("arch", models.names())
def test_every_model_option_is_checked_against_its_declaration(arch, tmp_path, capsys):
    for option in models.declared(arch).values():
        for text in VALUES:
            argv = ["--arch", arch, "--model", f"{option.name}={text}",
                    "--workdir", str(tmp_path / "run")]  # fmt: skip
            number = float(text) if text != "abc" else math.nan
            accepts = (
                option.kind is not tuple
                and math.isfinite(number)
                and number >= option.range.low
                and (option.range.high is None or number <= option.range.high)
            )
            if accepts:
                given = dict(train_cli._parser().parse_args(argv).model)
                assert models.check_options(arch, given) == {option.name: number}
            else:
                assert_one_error_line(
                    lambda argv=argv: train_cli.main(argv), capsys, f"--model {option.name}={text}"
                )
            assert not (tmp_path / "run").exists()  # refused before any work


def test_help_lists_every_model_option_with_its_range(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    out = capsys.readouterr().out
    for arch in models.names():
        for option in models.declared(arch).values():
            assert f"{option.name}={option.default_text()} ({option.describe()})" in out
    assert "depth=2 (an int >= 1)" in out and "noise=0.5 (a float >= 0)" in out


@pytest.mark.parametrize("name", ["train", "eval", "score", "export"])
def test_help_is_plain_text_not_restructuredtext(name, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"aejax.{name}.__main__").main(["--help"])
    text = capsys.readouterr().out
    assert f"python -m aejax.{name}" in text
    assert "``" not in text and not re.search(r":[a-z]+:`", text), text
