"""How the `pdl` command line shows things: a person's state and the audit trail of their
events, the progress of a catch-up over the log, and what `pdl serve` says as it starts.

Sealed values are never opened here: they show as `<sealed>` (`<erased>` once their key is
destroyed); what is shown is the readable audit trail and the state folded from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from enum import Enum

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from rich.text import Text

from ledger import events as ev
from ledger.sealing import SEALED_PREFIXES
from ledger.subject_state import ConsentStatus, SubjectState, minor_at
from server.runtime import Runtime
from server.settings import Settings

__all__ = ["announce", "details", "print_state", "progress", "utc"]

_ENVELOPE_FIELDS = frozenset(ev.SubjectEnvelope.model_fields)
_SEALED_FIELDS = frozenset({"account_id", "guardian", "reference", "values"})
_LONG_FIELDS = frozenset({"not_reached"})
_SEALED = "<sealed>"
_ERASED = "<erased>"


def print_state(
    console: Console, state: SubjectState, now: datetime, majority: int, zone: tzinfo
) -> None:
    """A subject's current view: what is held, under which consents, shared with whom."""

    def row(label: str, text: str) -> None:
        console.print(Text(f"  {label:<12} {text}"))

    def local(instant: datetime) -> str:
        return instant.astimezone(zone).isoformat(sep=" ", timespec="minutes")

    console.print(Text(f"Current state of subject {state.subject_id}:", style="bold"))
    born = f"born {state.birth_year}" if state.birth_year else "birth year unknown"
    row("registered", f"{local(state.registered_at)}, namespace {state.namespace}, {born}")
    for i, (category, held) in enumerate(sorted(state.held.items())):
        sources, purposes = ", ".join(sorted(held.sources)), ", ".join(sorted(held.purposes))
        row("" if i else "held", f"{category:<24} from {sources}; for {purposes}")
    if not state.held:
        row("held", "nothing")
    for i, grant in enumerate(state.consents):
        pairs = [(p, c) for p in grant.purposes for c in grant.categories]
        given = all(state.consent_status(p, c, now) is ConsentStatus.GIVEN for p, c in pairs)
        scope = f"{', '.join(sorted(grant.purposes))}: {', '.join(sorted(grant.categories))}"
        by = f"given {local(grant.given_at)} by {grant.given_by.value}"
        row("" if i else "consents", f"{'in force' if given else 'withdrawn':<9} {scope} ({by})")
    for i, w in enumerate(state.withdrawals):
        purposes = ", ".join(sorted(w.purposes)) or "every purpose"
        categories = ", ".join(sorted(w.categories)) or "every category"
        row("" if i else "withdrawn", f"{purposes} ({categories}) on {local(w.at)}")
    for i, (rc, recipients) in enumerate(sorted(state.shared_with.items())):
        row("" if i else "shared with", f"{', '.join(sorted(recipients))} ({rc})")
    row("used for", ", ".join(sorted(state.purposes_used)) or "nothing")
    flags = {
        "minor": minor_at(state.birth_year, state.minor, now, majority),
        "guardian": state.has_guardian,
        "erased": state.erased,
        "cancelled": state.cancelled,
        "key shredded": state.key_shredded,
    }
    row("flags", ", ".join(f"{name}={'yes' if on else 'no'}" for name, on in flags.items()))
    row("events", f"{state.events}; data stored in {state.storage_region}")


def utc(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def details(payload: BaseModel, *, erased: bool = False) -> str:
    """The audit-trail fields of a payload; sealed values show as <sealed>, never opened, or
    as <erased> when `erased` (their key is destroyed)."""
    sealed = _ERASED if erased else _SEALED
    parts = []
    for name in type(payload).model_fields:
        if name in _ENVELOPE_FIELDS or name in _LONG_FIELDS:
            continue
        value = getattr(payload, name)
        if name in _SEALED_FIELDS:
            if value:
                keys = value if isinstance(value, dict) else ()
                shown = ", ".join(f"{k}={sealed}" for k in keys) or sealed
                parts.append(f"{name}: {shown}")
            continue
        if value is None or value == {} or (value == () and name not in _EMPTY_MEANS_ALL):
            continue
        parts.append(f"{name}={_text(value, sealed)}")
    return " ".join(parts)


_EMPTY_MEANS_ALL = frozenset({"purposes", "categories"})


def _text(value: object, sealed: str = _SEALED) -> str:
    if isinstance(value, tuple):
        return ",".join(_text(v, sealed) for v in value) or "all"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return utc(value)
    text = str(value)
    return sealed if text.startswith(SEALED_PREFIXES) else text


@contextmanager
def progress(runtime: Runtime) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr over the log, fed by the runner after each page."""
    total = runtime.ledger.recorder.max_notification_id() or 0
    columns = (*Progress.get_default_columns(), MofNCompleteColumn())
    console = Console(stderr=True)
    shown = console.is_terminal  # off a terminal a bar would leave only an empty line behind
    with Progress(*columns, console=console, transient=True, disable=not shown) as bar:
        task = bar.add_task("folding the log", total=total)

        def advance(position: int, _read: int) -> None:
            bar.update(task, completed=min(position, total))

        yield advance


_PROJECTIONS = {
    "process": "a projection process of its own",
    "in-process": "a thread",
    "external": "`pdl project` workers, not by this server",
}


def announce(settings: Settings, location: str, port: int, *, made: bool) -> None:
    """What `pdl serve` says on stderr once it listens: where, how, and its secrets' files."""
    host = settings.listen.rsplit(":", 1)[0]
    security = "TLS" if settings.tls is not None else "no TLS: plaintext, loopback only"
    if settings.tls is not None and settings.tls.client_ca_file is not None:
        security = "mutual TLS: client certificates required"
    lines = [
        f"pdl: serving on {host}:{port} ({security})",
        f"pdl: storage {location}",
        "pdl: writes made by "
        + ("a writer process of its own" if settings.writer == "process" else "a thread"),
        "pdl: views kept up to date by "
        + _PROJECTIONS[settings.projections]
        + (
            f" (at nice +{settings.projection_nice}: calls and writes come first)"
            if settings.projections == "process" and settings.projection_nice
            else ""
        ),
        f"pdl: admin token {'written to' if made else 'in'} {settings.admin_token_path} "
        "(owner-only; send it as 'authorization: Bearer <token>')",
    ]
    if settings.master_key is None:
        lines.append(f"pdl: master key in {settings.master_key_path} (owner-only; back it up)")
    for line in lines:
        typer.echo(line, err=True)
