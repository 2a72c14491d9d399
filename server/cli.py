"""The `pdl` command line: thin commands over the ledger application.

Each command loads the settings (`--config` TOML file, `PDL_*` variables, options), opens the
runtime, does one thing and closes it. An error is one line on stderr (`error: ...`), never a
traceback, never a personal value: exit code 1 when a command fails (an error the ledger raises
on purpose, bad input), 2 for a usage error typer finds before any command runs (a missing
argument, an unknown option or command, a bad option value). `pdl` or `pdl policy` alone prints
the help, with exit code 2 as click gives it. Ctrl-C stops `pdl serve` and the `pdl project`
workers cleanly and ends the other commands with exit code 130.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console
from rich.text import Text

from ledger import events as ev
from ledger.clock import Clock, FixedClock
from ledger.commands import SubjectRef
from ledger.errors import SubjectNotFound
from projections import VIEW_NAMES
from server.app import check_listen
from server.app import serve as serve_forever
from server.auth import PrincipalRegistry, load_or_create_admin_token
from server.cli_args import VIEWS, instant_option, listen_option, view_names
from server.cli_data_dir import check_existing, claim_for_demo, demo_settings, one_server
from server.cli_display import announce, details, print_state, progress, utc
from server.cli_errors import OneLineUsageErrors, fail, one_line_errors
from server.cli_token import token
from server.demo import DEMO_START, DEMO_ZONE, DemoValues, run_demo
from server.runtime import Runtime, open_runtime
from server.settings import Settings, load_settings
from server.workers import catch_up, run_workers, split

app = typer.Typer(
    name="pdl",
    cls=OneLineUsageErrors,
    help="Personal data ledger: every collection, use, share, consent change, correction and "
    "erasure of a person's data, recorded under the privacy policy in force.",
    epilog="Exit codes: 0 done, 1 the command failed, 2 a usage error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's lines wrap as paragraphs
)
policy_app = typer.Typer(
    name="policy",
    cls=OneLineUsageErrors,
    help="The privacy policy versions the ledger enforces.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(policy_app)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            version = metadata.version("personal-data-ledger")
        except metadata.PackageNotFoundError:  # run from a source tree that is not installed
            version = "(not installed)"
        typer.echo(f"pdl {version}")
        raise typer.Exit


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """The options of `pdl` itself, before a command."""


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        dir_okay=False,
        help="TOML settings file; PDL_* environment variables override it.",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        file_okay=False,
        help="Data directory: the embedded SQLite store, the master key and the admin token  "
        "[default: ./pdl-data]",
    ),
]
DemoDataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        file_okay=False,
        help="The demo's own data directory  [default: ./pdl-demo]",
    ),
]


def main() -> None:
    """Run the command line (the `pdl` script enters through `server.entry`)."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 (last resort: one line, never a traceback)
        # Only the type: an unexpected error's text is not known to be free of personal values.
        typer.echo(f"error: unexpected {type(exc).__name__}; nothing more is shown", err=True)
        raise SystemExit(1) from None


@app.command()
def demo(data_dir: DemoDataDirOption = None, config: ConfigOption = None) -> None:
    """Record a scripted, realistic history under the seed policy and show what the rules decide.

    The clock is fixed at 2026-03-02 09:00 Asia/Shanghai and moved between steps, so the demo
    keeps to a data directory of its own (./pdl-demo unless one is given) and refuses one that
    holds a ledger it did not make. Every run registers new people, so it can run again there.
    """
    console = _console()
    clock = FixedClock(DEMO_START)
    with one_line_errors():
        settings = demo_settings(load_settings(config, data_dir=data_dir))
    with one_line_errors(), _runtime(config, data_dir, clock, settings=settings) as runtime:
        claim_for_demo(settings, runtime, _location(runtime))
        summary = run_demo(runtime.ledger, clock, console, DemoValues.generate())
        state = runtime.ledger.subject_state(SubjectRef(subject_id=summary.adult))
        _, policy = runtime.ledger.policy_in_force(clock.now())
        where = _location(runtime)
    console.print()
    print_state(console, state, clock.now(), policy.minors.age_of_majority, DEMO_ZONE)
    scripted = "all as scripted" if not summary.unexpected else "NOT all as scripted"
    console.print()
    console.print(
        Text(
            f"demo: {summary.accepted} accepted, {summary.refused} refused ({scripted}); "
            f"adult {summary.adult}, minor {summary.minor} (erased); {where}; "
            f"{summary.log_size} events in the log"
        )
    )
    if summary.unexpected:
        fail(f"{summary.unexpected} step(s) of the demo did not go as scripted")


@policy_app.command("show")
def policy_show(
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="ISO-INSTANT",
            help="Show the version in force at this instant, e.g. 2026-03-02T09:00+08:00 "
            "[default: now]",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the policy version in force: version, effective date, digest and what it declares."""
    console = _console()
    with one_line_errors():
        instant = instant_option(at)
        with _runtime(config, data_dir, existing=True) as runtime:
            published, policy = runtime.ledger.policy_in_force(instant or _now(runtime))
    deadline = policy.response_deadline
    sensitive = sum(1 for c in policy.categories if c.sensitive)
    rows = [
        ("policy", f"{policy.policy_id} version {published.version}"),
        ("title", policy.title),
        ("effective", utc(published.effective_at)),
        (
            "published",
            f"{utc(published.published_at)} ({'major' if published.major else 'minor'})",
        ),
        ("digest", f"sha256:{published.digest}"),
        ("text sha256", published.text_sha256),
        ("categories", f"{len(policy.categories)} ({sensitive} sensitive)"),
        ("purposes", str(len(policy.purposes))),
        ("recipients", f"{len(policy.recipient_classes)} recipient classes"),
        ("deadline", f"{deadline.days} {deadline.kind} days ({deadline.clause})"),
    ]
    for label, text in rows:
        console.print(Text(f"{label:<12} {text}"))


@app.command()
def history(
    subject_id: Annotated[
        str, typer.Argument(metavar="SUBJECT_ID", help="The subject's pseudonym (a UUID).")
    ],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a subject's audit trail: event types, times, categories, purposes, recipients.

    Personal values stay sealed and show as `<sealed>`; after erasure, as `<erased>`: they
    are gone for good.
    """
    console = _console()
    with one_line_errors():
        try:
            sid = UUID(subject_id)
        except ValueError:
            fail("SUBJECT_ID is not a subject id (a UUID)", 2)  # not echoed: may be personal
        with _runtime(config, data_dir, existing=True) as runtime:
            try:
                events = runtime.ledger.history(sid)
            except SubjectNotFound:
                events = []
        if not events or not isinstance(events[0], ev.SubjectRegistered):
            fail(f"unknown subject {sid}")  # a rights request's id is not a subject's
    console.print(Text(f"subject {sid}: {len(events)} events", style="bold"))
    erased = any(isinstance(payload, ev.KeyShredded) for payload in events)
    for number, payload in enumerate(events, start=1):
        line = Text(f"{number:>4}  {utc(payload.occurred_at)}  ")
        line.append(f"{type(payload).__name__:<20}", style="bold")
        line.append(f"  {details(payload, erased=erased)}  ")
        line.append(f"[policy {payload.policy_version}, by {payload.principal}]", style="dim")
        console.print(line)


# --- plumbing ---------------------------------------------------------------------------------


ListenOption = Annotated[
    str | None,
    typer.Option(
        "--listen",
        metavar="HOST:PORT",
        help="Address to listen on  [default: 127.0.0.1:50051; loopback only without TLS]",
    ),
]


@app.command()
def serve(
    data_dir: DataDirOption = None, config: ConfigOption = None, listen: ListenOption = None
) -> None:
    """Run the gRPC service: SQLite in DIR by default, PostgreSQL when database_url is set.

    On first run it makes the master key and an admin bearer token, owner-only, in the data
    directory. SIGTERM or Ctrl-C stops it after in-flight calls finish; every acknowledged
    event is durable by then. One JSON log line per call goes to stderr.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with one_line_errors():
        listen_option(listen)
        settings = load_settings(config, data_dir=data_dir, listen=listen)
        check_listen(settings.listen, settings.tls)  # before anything is created on disk
        PrincipalRegistry.from_settings(settings, None)  # the principals, before the token
        with one_server(settings), _runtime(config, data_dir, settings=settings) as runtime:
            # made once the storage and the master key opened: a failed start leaves none
            token, made = load_or_create_admin_token(settings.admin_token_path)
            registry = PrincipalRegistry.from_settings(settings, token)

            def ready(port: int) -> None:
                announce(settings, _location(runtime), port, made=made)

            asyncio.run(serve_forever(settings, runtime, registry, on_ready=ready))


@app.command()
def project(
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    view: Annotated[
        list[str] | None,
        typer.Option(
            "--view", metavar="NAME", help=f"A view to run (repeatable). [default: all: {VIEWS}]"
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", metavar="N", min=1, help="Worker processes the views are dealt to."
        ),
    ] = len(VIEW_NAMES),
    once: Annotated[
        bool, typer.Option("--once", metavar="", help="Catch up to the end of the log, then exit.")
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", metavar="", help="Empty the views and fold the whole log again."),
    ] = False,
    page_size: Annotated[
        int,
        typer.Option(
            "--page-size",
            metavar="N",
            min=1,
            max=10_000,
            help="Log entries read and folded at a time; while catching up, a transaction "
            "grows to eight such pages.",
        ),
    ] = 500,
    nice: Annotated[
        int | None,
        typer.Option(
            "--nice",
            metavar="N",
            min=0,
            max=19,
            help="How much lower the workers' CPU priority is than this command's (added to "
            "their nice value; 0: the same), so that a server on the same machine comes first. "
            "[default: the projection_nice setting, 10]",
        ),
    ] = None,
) -> None:
    """Keep the views (subject view, consents, processing register, request deadlines,
    retention, policy notices) up to date in worker processes of their own.

    For deployments on PostgreSQL, with `projections = "external"` in the settings so that
    `pdl serve` leaves the views to these workers. Each view belongs to one worker; a worker
    resumes from its tracking positions. With --once (or --rebuild) it catches up in this
    process, with a progress bar, and exits.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with one_line_errors():
        names = view_names(view)
        settings = load_settings(config, data_dir=data_dir)
        lower = settings.projection_nice if nice is None else nice
        if once or rebuild:
            if lower:
                os.nice(lower)  # catching up here: the same priority the workers would have
            with (
                _runtime(config, data_dir, settings=settings, existing=True) as runtime,
                progress(runtime) as advance,
            ):
                reached = catch_up(
                    runtime,
                    names,
                    rebuild=names if rebuild else (),
                    page_size=page_size,
                    progress=advance,
                )
            typer.echo(f"pdl: views {', '.join(names)} at position {reached}", err=True)
            return
        # made once here, what is missing, before the workers open it all at once
        with _runtime(config, data_dir, settings=settings, existing=True):
            pass
        groups = split(names, workers)

        def started(pid: int, group: tuple[str, ...]) -> None:
            typer.echo(f"pdl: worker {pid} runs {', '.join(group)}", err=True)

        failed = run_workers(config, data_dir, groups, page_size, nice=lower, on_start=started)
        if failed:
            fail(f"{failed} worker(s) failed")


app.command()(token)  # `server.cli_token`


@contextmanager
def _runtime(
    config: Path | None,
    data_dir: Path | None,
    clock: Clock | None = None,
    settings: Settings | None = None,
    *,
    existing: bool = False,
) -> Iterator[Runtime]:
    """The runtime on the settings; with `existing`, a ledger must be there already: its
    event store (on SQLite) and its master key (a command that only reads never makes a
    ledger, nor a key, where a mistyped --data-dir points)."""
    settings = settings or load_settings(config, data_dir=data_dir)
    if existing:
        check_existing(settings)
    runtime = open_runtime(settings, clock=clock)
    try:
        yield runtime
    finally:
        runtime.close()


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True, emoji=False)


def _location(runtime: Runtime) -> str:
    if runtime.storage.backend == "sqlite":
        return f"data dir {runtime.settings.data_dir.resolve()}"
    return f"{runtime.storage.backend} database"


def _now(runtime: Runtime) -> datetime:
    return runtime.ledger.clock.now()
