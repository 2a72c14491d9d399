"""How the `pdl` command line reports errors: one `error:` line on stderr, never a traceback,
never a personal value; exit code 1 when a command fails, 2 for a usage error that click finds
before any command runs (see `server.cli`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

# Typer (0.26 on) vendors click and exports neither its Context nor its usage errors publicly.
from typer._click import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from ledger.errors import LedgerError

__all__ = ["OneLineUsageErrors", "fail", "one_line_errors", "one_line_usage_errors"]


class OneLineUsageErrors(TyperGroup):
    """A command group whose usage errors are one `error:` line, not typer's boxed panel."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        with one_line_usage_errors(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Context) -> Any:
        with one_line_usage_errors(ctx):
            return super().invoke(ctx)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one `error:` line and exit code 1."""
    try:
        yield
    except LedgerError as exc:
        fail(str(exc) or type(exc).__name__)
    except ValidationError as exc:
        # Only where and what: pydantic's own text would echo the input, maybe a personal value.
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))


@contextmanager
def one_line_usage_errors(ctx: Context) -> Iterator[None]:
    """Turn the errors click finds, such as a usage error before a command runs, into one
    `error:` line with click's exit code (2 for a usage error) and where to find help."""
    try:
        yield
    except NoArgsIsHelpError:
        raise  # the help is printed already; click exits with code 2
    except ClickException as exc:
        message = exc.format_message()
        if type(exc) is UsageError:
            message = _unechoed(message)
        found_in = exc.ctx if isinstance(exc, UsageError) else None
        where = ctx if found_in is None else found_in
        path = where.command_path
        if found_in is None and ctx.invoked_subcommand:  # a parse error without its context
            path = f"{path} {ctx.invoked_subcommand}"
        hint = f" (see '{path} {where.help_option_names[0]}')" if where.help_option_names else ""
        fail(f"{message[:1].lower()}{message[1:].rstrip('.')}{hint}", exc.exit_code)


def _unechoed(message: str) -> str:
    """A usage error's message without the words the user typed that it quotes (one may be a
    personal value); a "did you mean" hint names our own commands, so it stays."""
    if message.startswith("Got unexpected extra argument"):
        return "got unexpected extra argument(s)"
    if message.startswith("No such command"):
        hint = re.search(r"Did you mean (.+?)\?", message)
        return "no such command" + (f"; did you mean {hint.group(1)}?" if hint else "")
    return message


def fail(message: str, exit_code: int = 1) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(exit_code)
