"""`pdl token`: a bearer token for a calling service, and its entry for the settings file.

The token is written to a new owner-only file for the service; what is printed is the
principal's `[[principals]]` entry, which holds only the token's SHA-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from server.auth import ADMIN, new_token, token_hash, write_token_file
from server.cli_errors import fail, one_line_errors
from server.settings import PrincipalConfig, Scope

__all__ = ["token"]


def token(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The calling service's principal name.")
    ],
    scopes: Annotated[
        list[Scope],
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="What it may do: record, read, audit, admin or reveal; give the option once "
            "per scope.",
        ),
    ],
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            metavar="FILE",
            dir_okay=False,
            help="New owner-only file for its bearer token (never overwritten).",
        ),
    ],
) -> None:
    """Make a bearer token for a calling service, and print its [[principals]] entry.

    The token goes to FILE, owner-only, for the service to send as `authorization: Bearer
    <token>`; the entry printed holds only its SHA-256, for the settings file (`--config`) of
    `pdl serve`, which reads it when it starts.
    """
    made = new_token()
    with one_line_errors():
        if name == ADMIN:
            fail(f"NAME: {ADMIN!r} is the server's own principal; choose another name", 2)
        try:
            entry = PrincipalConfig(
                name=name, scopes=tuple(dict.fromkeys(scopes)), token_sha256=token_hash(made).hex()
            )
        except ValidationError:
            fail("NAME: 1 to 64 letters, digits and _ . : -, starting with a letter or digit", 2)
        try:
            write_token_file(token_file, made)
        except FileExistsError:
            fail(f"{token_file} exists: a token file is never overwritten")
    listed = ", ".join(f'"{scope.value}"' for scope in entry.scopes)
    typer.echo(f'[[principals]]\nname = "{entry.name}"\nscopes = [{listed}]')
    typer.echo(f'token_sha256 = "{entry.token_sha256}"')
    typer.echo(
        f"pdl: {entry.name}'s bearer token is in {token_file} (owner-only); add the entry "
        "above to the settings file and restart pdl serve",
        err=True,
    )
