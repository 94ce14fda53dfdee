"""Render the ``sisakit`` command line from its argparse parser.

``.. sisakit-cli::`` documents the top-level command (usage and global options);
``.. sisakit-cli:: demo`` documents one subcommand: its usage, a description and one
``.. option::`` entry per argument, so ``:option:`sisakit demo --json``` links to it. The text
comes from :func:`sisakit.cli.build_parser`, so the reference cannot drift from the code; an
unknown subcommand is a build error.
"""

from __future__ import annotations

import argparse

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

WIDTH = 88


def _parser() -> argparse.ArgumentParser:
    from sisakit.cli import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser],
                                                            dict[str, str]]:
    """The subparsers of ``parser`` by name, and their one-line help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return dict(action.choices), helps
    return {}, {}


def subcommand_names() -> list[str]:
    """Every subcommand of ``sisakit``, in the parser's order (used by tests/test_docs.py)."""
    return list(_subcommands(_parser())[0])


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDTH)
    text = formatter._expand_help(action) if action.help else ""
    default = action.default
    if (action.option_strings and default not in (None, False, argparse.SUPPRESS)
            and "default" not in text and not isinstance(action, argparse._VersionAction)):
        text += f" (default: ``{default}``)"
    return text


def _option_lines(parser: argparse.ArgumentParser, *, with_help: bool) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction) and not with_help:
            continue  # every subcommand has -h/--help; the top-level entry says so once
        if action.option_strings:
            takes_value = action.nargs != 0
            metavar = action.metavar or action.dest.upper()
            names = ", ".join(f"{o} {metavar}" if takes_value else o for o in action.option_strings)
        else:
            names = action.metavar or action.dest
        lines += [f".. option:: {names}", ""]
        help_text = _help(parser, action)
        lines += [f"   {help_text}" if help_text else "   (no description)", ""]
    return lines


class SisakitCli(SphinxDirective):
    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        parser = _parser()
        subparsers, helps = _subcommands(parser)
        if self.arguments:
            name = self.arguments[0]
            if name not in subparsers:
                raise self.error(f"sisakit has no subcommand {name!r}; it has "
                                 f"{', '.join(subparsers)}")
            target, program = subparsers[name], f"sisakit {name}"
            description = target.description or helps.get(name, "")
        else:
            target, program = parser, "sisakit"
            description = parser.description or ""
        lines = [f".. program:: {program}", "", ".. code-block:: text", ""]
        lines += [f"   {line}" for line in _usage(target).splitlines()]
        lines += [""]
        if description:
            lines += [description[0].upper() + description[1:].rstrip(".") + ".", ""]
        if not self.arguments and subparsers:
            lines += ["Subcommands:", ""]
            lines += [f"* ``sisakit {n}``: {helps.get(n, '')}" for n in subparsers]
            lines += ["", "Every subcommand also takes ``-h``/``--help``.", ""]
        lines += _option_lines(target, with_help=not self.arguments)
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="sisakit.cli"), node)
        return node.children


def setup(app):
    app.add_directive("sisakit-cli", SisakitCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
