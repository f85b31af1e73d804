"""MkDocs hook: the parts of the documentation that are generated from the code, so that they
cannot drift from it. A page asks for one with a marker line:

- `<!-- generated: cli -->`: every `alertbridge` command, its usage, help and options (click);
- `<!-- generated: http -->`: every operation of the OpenAPI document the server serves;
- `<!-- generated: layers -->`: the packages by layer, as tests/test_architecture.py enforces
  them, each with the first paragraph of its docstring.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _commands(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        path = f"{ctx.command_path} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, click.Context(command, info_name=name, parent=ctx))
    return found


def cli_reference() -> str:
    from bridge.cli import main

    root = click.Context(main, info_name="alertbridge")
    out = ["Generated from the commands themselves (`alertbridge COMMAND --help` says the same)."]
    out += ["", "## alertbridge", "", "```text", _usage(main, root), "```", ""]
    out += _options(main, root)
    for path, command in _commands(main, root):
        ctx = click.Context(command, info_name=path.split(" ", 1)[1], parent=root)
        out += ["", f"## {path}", "", "```text", f"{path} {_pieces(command, ctx)}", "```", ""]
        if command.help:
            out += [_help(command.help), ""]
        out += _options(command, ctx)
    return "\n".join(out) + "\n"


def _usage(command: click.Command, ctx: click.Context) -> str:
    return f"alertbridge {_pieces(command, ctx)}"


def _pieces(command: click.Command, ctx: click.Context) -> str:
    return " ".join(command.collect_usage_pieces(ctx))


def _help(text: str) -> str:
    """click's help as Markdown: its paragraphs, \\b blocks kept as they are."""
    paragraphs = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            paragraphs.append("```text\n" + "\n".join(lines[1:]) + "\n```")
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    rows = [param.get_help_record(ctx) for param in command.get_params(ctx)]
    records = [r for r in rows if r is not None]
    if not records:
        return []
    out = ["| option | |", "|---|---|"]
    out += [f"| `{_cell(opts)}` | {_cell(text)} |" for opts, text in records]
    return out


def http_reference() -> str:
    from bridge.http.openapi import SPEC

    out = ["Generated from the OpenAPI document the server serves at `GET /api/v1/openapi.json`.",
           "", "| operation | what | answers |", "|---|---|---|"]  # fmt: skip
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            what = op.get("summary") or op.get("description", "").split(". ")[0]
            codes = ", ".join(sorted(op.get("responses", {})))
            out.append(f"| `{method.upper()} {path}` | {_cell(what)} | {codes} |")
    return "\n".join(out) + "\n"


def _docstring(name: str) -> str:
    package = ROOT / "bridge" / name
    path = package / "__init__.py" if package.is_dir() else package.with_suffix(".py")
    text = ast.get_docstring(ast.parse(path.read_text())) or ""
    return _cell(text.split("\n\n", 1)[0])


def layers_table() -> str:
    if str(ROOT) not in sys.path:  # the tests' LAYERS (MkDocs restores sys.path after loading
        sys.path.insert(0, str(ROOT))  # a hook: so here, when it runs)
    from tests.test_architecture import LAYERS

    out = ["| layer | package | what is in it |", "|---|---|---|"]
    for level, names in enumerate(LAYERS):
        for name in sorted(names):
            out.append(f"| {level} | `{name}` | {_docstring(name)} |")
    return "\n".join(out) + "\n"


GENERATORS = {"cli": cli_reference, "http": http_reference, "layers": layers_table}


def on_page_markdown(markdown: str, **_: Any) -> str:
    for name, generate in GENERATORS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
