"""Guards of the data directory for the `pdl` commands: a reading command finds a ledger there
and never makes one; `pdl demo` keeps to a directory of its own; one `pdl serve` per embedded
store."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.cli_errors import fail
from server.runtime import EVENTS_FILE, Runtime
from server.settings import Settings

DEMO_DATA_DIR = "pdl-demo"
"""Where `pdl demo` records unless told otherwise: not `pdl serve`'s ./pdl-data."""
_DEMO_MARK = "DEMO"
_NOT_THE_DEMOS = (
    "{where} holds a ledger pdl demo did not make; the demo's clock is fixed in March 2026 "
    "and would record back in time in it: give --data-dir a directory of its own"
)
_SERVE_LOCK = "serve.lock"


def check_existing(settings: Settings) -> None:
    """Refuse settings naming no ledger: on SQLite its event store, and its master key."""
    make = "give --data-dir, or make one with pdl serve or pdl demo"
    if settings.database_url is None:
        if not settings.data_dir.is_dir():
            fail(f"no data directory {settings.data_dir}: {make}")
        if not (settings.data_dir / EVENTS_FILE).is_file():
            fail(f"no ledger in {settings.data_dir} (no {EVENTS_FILE}): {make}")
    if settings.master_key is None and not settings.master_key_path.is_file():
        fail(f"no master key at {settings.master_key_path}: {make}, or give master_key_file")


def demo_settings(settings: Settings) -> Settings:
    """The demo's settings: its own directory unless one was given; an embedded store there
    that it did not make is refused before anything is opened."""
    if "data_dir" not in settings.model_fields_set:
        settings = settings.model_copy(update={"data_dir": Path(DEMO_DATA_DIR)})
    events = settings.data_dir / EVENTS_FILE
    if settings.database_url is None and events.is_file() and not _demo_made(settings):
        fail(_NOT_THE_DEMOS.format(where=f"data dir {settings.data_dir}"))
    return settings


def claim_for_demo(settings: Settings, runtime: Runtime, where: str) -> None:
    """Refuse an opened ledger that records people and was not the demo's (PostgreSQL, which
    cannot be looked at before it is opened); then mark the directory as the demo's."""
    first = runtime.ledger.recorder.select_notifications(1, 64)
    people = any(not n.topic.startswith("ledger.policy_book:") for n in first)
    if people and not _demo_made(settings):
        fail(_NOT_THE_DEMOS.format(where=where))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / _DEMO_MARK).write_text(
        "Made by pdl demo: its events are dated by the demo's fixed clock.\n", encoding="utf-8"
    )


def _demo_made(settings: Settings) -> bool:
    return (settings.data_dir / _DEMO_MARK).is_file()


@contextmanager
def one_server(settings: Settings) -> Iterator[None]:
    """Hold the embedded store's server lock while serving: a second `pdl serve` on the same
    data directory is refused (the event store has one writer, and the views one folder)."""
    if settings.database_url is not None:
        yield
        return
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only, as it is made
    lock = os.open(settings.data_dir / _SERVE_LOCK, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(lock, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fail(f"another pdl serve is running on data dir {settings.data_dir}")
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
