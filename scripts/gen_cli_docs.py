"""Rewrite the generated option lists of docs/cli.md from the typer app, so the reference cannot drift.

    python3 scripts/gen_cli_docs.py            # rewrite docs/cli.md in place
    python3 scripts/gen_cli_docs.py --check    # exit 1 if docs/cli.md is out of date

Each command's list lies between ``<!-- cli:NAME:start -->`` and ``<!-- cli:NAME:end -->``
(``NAME`` = ``prune-snr`` for the global options); everything outside the markers is written by
hand and kept. A command without markers gets a new section at the end of the file. Defaults are
the ones ``--help`` shows: a config option's from its field (``prune_snr/config/training.py``,
``measuring.py``, ``pruning.py``), a command's own parameter's from its signature.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"


def click_app() -> typing.Any:
    sys.path.insert(0, str(ROOT))
    import typer.main

    from prune_snr.cli import app

    return typer.main.get_command(app)


def is_option(param) -> bool:
    """An option, not an argument (typer ships its own click, so no isinstance against the installed one)."""
    return param.param_type_name == "option"


def flags(param: typing.Any) -> list[str]:
    """Every spelling of an option (``--amp``, ``--no-amp``); empty for an argument or a hidden option (an old
    spelling kept only to name its successor)."""
    if not is_option(param) or param.hidden:
        return []
    return [o for o in [*param.opts, *param.secondary_opts] if o.startswith("-")]


def metavar(param) -> str:
    """``N``, ``X``, ``TEXT``, ``PATH`` or ``N N`` from the parameter's annotation; empty for a flag."""
    if is_option(param) and param.is_flag:
        return ""
    annotation = param.type_descriptor.annotation if hasattr(param, "type_descriptor") else str
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation, args = args[0], list(typing.get_args(args[0]))
    if typing.get_origin(annotation) is tuple:
        return " ".join(metavar_of(a) for a in args)
    return metavar_of(annotation)


def metavar_of(annotation) -> str:
    return {int: "N", float: "X", str: "TEXT", Path: "PATH"}.get(
        annotation, getattr(annotation, "__name__", "VALUE").upper()
    )


def default_text(param: typing.Any) -> str:
    """The default an option shows: a config field's (the ``show_default`` its typer option was given from the
    field, prune_snr/cli/flags.py), else the parameter's own."""
    value = param.default
    if isinstance(getattr(param, "show_default", None), str):
        value = {"True": True, "False": False}.get(param.show_default, param.show_default)
    if (
        value is None
        or value is ...
        or (is_option(param) and param.is_flag and value is False and not param.secondary_opts)
    ):
        return ""
    if is_option(param) and param.secondary_opts and isinstance(value, bool):
        return f" Default: `{param.opts[0] if value else param.secondary_opts[0]}`."
    return f" Default: `{value}`."


def render(name: str, cmd: typing.Any) -> str:
    """The generated block of one command: usage, its one-line help, one bullet per argument and option."""
    args = [p for p in cmd.params if not is_option(p)]
    usage = " ".join(
        ["prune-snr" if name == "prune-snr" else f"prune-snr {name}", *(p.name.upper() for p in args), "[OPTIONS]"]
    )
    lines = [f"Usage: `{usage}`", ""]
    if cmd.help and name != "prune-snr":
        lines += [cmd.help.strip().splitlines()[0], ""]
    for p in args:
        lines.append(f"- `{p.name.upper()}` (argument): {getattr(p, 'help', None) or ''}".rstrip())
    for p in cmd.params:
        if not is_option(p) or p.hidden:
            continue
        spelled = "/".join(flags(p))
        mv = metavar(p)
        required = " Required." if p.required else ""
        help_text = (p.help or "").strip()
        if help_text and not help_text.endswith("."):
            help_text += "."
        default = "" if re.search(r"\bdefault\b", help_text, re.I) else default_text(p)  # the help says it already
        rest = re.sub(r"\s+", " ", f"{help_text}{required}{default}").strip()
        lines.append(f"- `{spelled}{' ' + mv if mv else ''}`" + (f": {rest}" if rest else ""))
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    """Command name -> generated block, the global options first, then the commands in the app's order."""
    group = click_app()
    return {
        "prune-snr": render("prune-snr", group),
        **{name: render(name, cmd) for name, cmd in group.commands.items()},
    }


def markers(name: str) -> tuple[str, str]:
    return f"<!-- cli:{name}:start -->", f"<!-- cli:{name}:end -->"


def rewrite(text: str, generated: dict[str, str]) -> str:
    for name, block in generated.items():
        start, end = markers(name)
        body = f"{start}\n{block}\n{end}"
        if start in text:
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: body, text, flags=re.S)
        else:
            text = text.rstrip() + f"\n\n## `prune-snr {name}`\n\n{body}\n"
    return text if text.endswith("\n") else text + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = DOC.read_text() if DOC.exists() else "# Command reference\n"
    new = rewrite(text, blocks())
    if "--check" in argv:
        if new != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python3 scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
