"""The `pdl` script's entry point, light enough to import before anything can go wrong.

Importing the command line (`server.cli`) takes about a second: gRPC, pydantic, SQLAlchemy and
the ledger. Ctrl-C in that second ends the script with exit code 130, as it does once a command
runs, and not with a traceback of the import that it interrupted.
"""

from __future__ import annotations

_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def main() -> None:
    """Import the command line and run it."""
    try:
        from server.cli import main as run  # noqa: PLC0415 (the point of this module)
    except KeyboardInterrupt:
        raise SystemExit(_INTERRUPTED) from None
    run()
