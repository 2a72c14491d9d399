"""Checks of the `pdl` command line's option values that typer cannot make itself: each bad
value is a usage error (exit code 2) in one line, before anything is opened."""

from __future__ import annotations

from datetime import datetime

from projections import VIEW_NAMES
from server.cli_errors import fail
from server.settings import listen_address

VIEWS = ", ".join(VIEW_NAMES)


def view_names(chosen: list[str] | None) -> tuple[str, ...]:
    """The views `--view` names, in their usual order; all of them when none is named."""
    if not chosen:
        return VIEW_NAMES
    unknown = sorted(set(chosen) - set(VIEW_NAMES))
    if unknown:
        fail(f"--view: unknown view {', '.join(unknown)}; known: {VIEWS}", 2)
    return tuple(n for n in VIEW_NAMES if n in chosen)


def instant_option(text: str | None) -> datetime | None:
    """`--at`'s instant: ISO 8601 with its UTC offset."""
    if text is None:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--at: not an ISO-8601 instant: {text!r}", 2)
    if instant.tzinfo is None:
        fail(f"--at: {text!r} has no UTC offset; e.g. 2026-03-02T09:00+08:00 or ...Z", 2)
    return instant


def listen_option(listen: str | None) -> None:
    """`--listen`'s HOST:PORT (the same check the settings make, as a usage error)."""
    if listen is None:
        return
    try:
        listen_address(listen)
    except ValueError as error:
        fail(f"--listen: {error}", 2)
