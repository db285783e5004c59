"""The command line's start-up and help pages: light imports, plain metavars, every default, whole sentences."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from speechkern_cli.main import LAZY_GROUPS, main

HEAVY = ("torch", "matplotlib", "numpy", "scipy", "sklearn", "speechkern.losses", "speechkern.collapse")

# Run the command line in a fresh interpreter and report which modules it imported.
PROBE = """
import json, sys
from speechkern_cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _probe(*argv: str) -> tuple[int, str, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], done.stdout, set(report["modules"])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["enhance", "--help"]])
def test_help_and_version_import_nothing_heavy(argv):
    code, out, modules = _probe(*argv)
    assert code in (0, None) and out.strip()
    loaded = sorted(m for m in modules for heavy in HEAVY if m == heavy or m.startswith(heavy + "."))
    assert not loaded, f"`speechkern {' '.join(argv)}` imported {loaded[:5]}"


def test_version_prints_the_package_version():
    import speechkern

    code, out, _ = _probe("--version")
    assert code in (0, None) and out.strip() == f"speechkern {speechkern.__version__}"


def test_importing_the_package_is_light():
    probe = "import sys, json, speechkern; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout)
    assert not [m for m in modules if m.split(".")[0] in ("torch", "numpy", "matplotlib", "scipy")]


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def _all_commands() -> list[list[str]]:
    """Every command of the tree, the lazily loaded groups' included, as argument lists."""
    import typer

    from speechkern_cli.main import app

    root = typer.main.get_command(app)
    ctx = root.make_context("speechkern", ["--help"], resilient_parsing=True)
    found = []
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            found += [[name, sub] for sub in command.list_commands(ctx)]
        else:
            found.append([name])
    return found


COMMANDS = _all_commands()
# Options whose absence means "nothing": there is no default to show.
NO_DEFAULT = {"--condition", "--ray-address", "--data", "--set", "--simulate-d"}


def _click_command(argv: list[str]):
    import typer

    from speechkern_cli.main import app

    command = typer.main.get_command(app)
    ctx = command.make_context("speechkern", ["--help"], resilient_parsing=True)
    for name in argv:
        command = command.get_command(ctx, name)
    return command


def _option_entries(text: str) -> dict[str, str]:
    """Option name (each of its spellings) → its whole entry in the Options section, on one line."""
    section = text.split("Options:\n", 1)[1]
    entries: list[str] = []
    for line in section.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif line.startswith("    ") and entries:
            entries[-1] += " " + line.strip()
    found = {}
    for entry in entries:
        names = re.split(r"\s{2,}", entry)[0]
        for name in re.findall(r"(--?[\w-]+)", names):
            found[name] = " ".join(entry.split())
    return found


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_shows_plain_metavars_and_every_default(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = _help(argv, capsys)
    assert not re.search(r"<(bool|str|int|float|path|list\[)", text), text
    assert "{" not in text.splitlines()[0], text.splitlines()[0]  # usage line: RECIPE_DIR, not {recipe_dir}
    entries = _option_entries(text)
    for param in _click_command(argv).params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        name = max(param.opts, key=len)
        entry = entries[name]
        if not param.is_flag:
            assert re.match(rf"^(-\w, )?{name} [A-Z\[]", entry), entry  # a plain metavar: TEXT, PATH, [a|b]
        if (param.is_flag and not param.secondary_opts) or name in NO_DEFAULT or param.required:
            assert not param.required or "[required]" in entry, entry
            continue  # a flag is off unless given; required options and these options have no default
        assert "[default: " in entry, f"speechkern {' '.join(argv)} {name}: no default shown in {entry!r}"
        if param.default is not None and not param.is_flag and "[default:" not in (param.help or ""):
            shown = ", ".join(map(str, param.default)) if isinstance(param.default, list) else str(param.default)
            assert f"default: {shown}" in entry, entry


def _paragraph_lines(text: str) -> list[list[str]]:
    """The description's paragraphs (between the usage line and the first section), as lists of lines."""
    body = text.split("\n\n", 1)[1]
    body = re.split(r"\n(?:Arguments|Options|Commands):\n", body)[0]
    return [p.splitlines() for p in body.split("\n\n") if p.strip()]


@pytest.mark.parametrize("argv", [[], *COMMANDS], ids=lambda a: " ".join(a) or "speechkern")
def test_help_has_no_line_break_inside_a_sentence(argv, capsys, monkeypatch):
    """Every line of a paragraph is filled: the next line's first word would not have fitted (Click's wrapping),
    so the line breaks of the docstrings' source never reach the page."""
    monkeypatch.setenv("COLUMNS", "80")
    text = _help(argv, capsys)
    width = 78  # Click's 80 columns less its margin
    for lines in _paragraph_lines(text):
        for line, following in zip(lines, lines[1:], strict=False):
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > width, f"early break after {line!r}"


def test_root_help_lists_every_command_with_whole_sentences(capsys):
    text = _help([], capsys)
    commands = text.split("Commands:\n", 1)[1]
    for name in ("train", "evaluate", "enhance", "mix", "oracle", *LAZY_GROUPS):
        assert re.search(rf"^  {name} ", commands, re.M), name
    assert "..." not in commands  # Click's short help would cut sentences off with "..."
    assert LAZY_GROUPS["losses"][1] in " ".join(commands.split())


def test_lazy_groups_run_and_typos_still_get_suggestions(capsys):
    text = _help(["losses"], capsys)
    assert "bench" in text
    with pytest.raises(SystemExit) as exit_:
        main(["loss"])
    assert exit_.value.code == 2
    assert "Did you mean 'losses'?" in capsys.readouterr().err
