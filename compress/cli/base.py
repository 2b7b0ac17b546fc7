"""The subcommand registry (`@command` classes with `add_arguments` and `run`) and the parser
whose errors are one line pointing at --help."""
from __future__ import annotations

import argparse
import sys

from compress.console import err

COMMANDS: dict[str, "Command"] = {}


class Command:
    """A subcommand: `add_arguments(parser)` and `run(args) -> exit code`."""

    name = ""
    help = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def command(cls):
    COMMANDS[cls.name] = cls()
    return cls


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help (exit code 2, like every user error)."""

    def error(self, message: str):
        err.print(f"[bold red]error:[/bold red] {self.prog}: {message}; see `{self.prog} --help`", soft_wrap=True)
        sys.exit(2)
