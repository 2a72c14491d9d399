"""Settings: one pydantic model, read from a TOML file and overridden by `PDL_*` variables.

Nothing is read at import time; `load_settings` is called by the command that needs it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from ledger.errors import ConfigurationError

_ENV_PREFIX = "PDL_"
_FILE_ONLY = frozenset({"principals", "tls"})  # structured: only the TOML file sets them
_MAX_PORT = 65535


class Scope(StrEnum):
    """What a principal may do."""

    RECORD = "record"
    READ = "read"
    AUDIT = "audit"
    ADMIN = "admin"
    REVEAL = "reveal"
    """Open a person's sealed values when reading their view (with `read`)."""


class PrincipalConfig(BaseModel):
    """A calling service: its name (recorded on every event it writes), scopes and credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="The principal's name."
    )
    scopes: tuple[Scope, ...] = Field(min_length=1, description="What it may do.")
    token_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of its bearer token; the token itself is never stored.",
    )
    token_file: Path | None = Field(
        default=None, description="A file holding its bearer token (hashed when loaded)."
    )
    tls_client_subject: str | None = Field(
        default=None,
        min_length=1,
        description="Common name of its client certificate, when mutual TLS identifies it.",
    )

    @model_validator(mode="after")
    def _has_credential(self) -> Self:
        if self.token_sha256 is None and self.token_file is None and not self.tls_client_subject:
            msg = f"principal {self.name!r} needs token_sha256, token_file or tls_client_subject"
            raise ValueError(msg)
        if self.token_sha256 is not None and self.token_file is not None:
            msg = f"principal {self.name!r}: give token_sha256 or token_file, not both"
            raise ValueError(msg)
        return self


class TlsConfig(BaseModel):
    """Server TLS, and mutual TLS when a client CA is given.

    gRPC's Python server can require a client certificate or not ask for one, but cannot ask
    for an optional one; so a client CA means every client must present a certificate (and
    may still send a bearer token, which then names the principal).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: Path = Field(description="Server certificate chain (PEM).")
    key_file: Path = Field(description="Server private key (PEM).")
    client_ca_file: Path | None = Field(
        default=None, description="CA bundle for client certificates; enables mutual TLS."
    )
    require_client_cert: bool = Field(
        default=False,
        description="Refuse connections without a valid client certificate; must be true "
        "exactly when client_ca_file is set.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.client_ca_file is not None) != self.require_client_cert:
            msg = (
                "client_ca_file and require_client_cert go together: gRPC cannot ask for an "
                "optional client certificate, so mutual TLS requires one"
            )
            raise ValueError(msg)
        return self


_LISTEN = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")


def listen_address(value: str) -> str:
    """HOST:PORT, the host a name, an IPv4 address or a bracketed IPv6 one, the port 0-65535
    (0: any free port)."""
    found = _LISTEN.fullmatch(value)
    if found is None or int(found.group(2)) > _MAX_PORT:
        msg = f"expected HOST:PORT with a port from 0 to {_MAX_PORT}, e.g. 127.0.0.1:50051"
        raise ValueError(msg)
    return value


class Settings(BaseModel):
    """Everything the ledger needs to start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(
        default=Path("pdl-data"),
        description="Directory of the embedded default: SQLite files, master key, tokens.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://user@host:port/db); unset means SQLite.",
    )
    postgres_schema: str = Field(default="public", description="PostgreSQL schema for all tables.")
    master_key: SecretStr | None = Field(
        default=None, description="Base64 master key; unset means the file in the data dir."
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the base64 master key (made on first run)."
    )
    policy_file: Path | None = Field(
        default=None, description="Policy document (TOML/JSON); unset means the bundled seed."
    )
    policy_effective_at: datetime | None = Field(
        default=None, description="When a custom first policy took effect; default: now."
    )
    bootstrap_principal: str = Field(
        default="pdl-bootstrap", description="Principal recorded on the first policy version."
    )
    listen: Annotated[str, AfterValidator(listen_address)] = Field(
        default="127.0.0.1:50051",
        description="HOST:PORT to listen on; without TLS only a loopback address is allowed.",
    )
    tls: TlsConfig | None = Field(default=None, description="TLS; unset means plaintext.")
    principals: tuple[PrincipalConfig, ...] = Field(
        default=(), description="Calling services, besides the generated admin."
    )
    admin_token_file: Path | None = Field(
        default=None, description="The admin's bearer token (made on first run, owner-only)."
    )
    max_batch_items: int = Field(
        default=1000, ge=1, le=100_000, description="Most items a RecordBatch call may carry."
    )
    group_commit_items: int = Field(
        default=512, ge=1, description="Most concurrent unary commands committed together."
    )
    writer: Literal["process", "thread"] = Field(
        default="process",
        description="process: a child process makes every write, on its own core (its own "
        "interpreter lock); thread: a thread of the server's own process does.",
    )
    projections: Literal["process", "in-process", "external"] = Field(
        default="process",
        description="process: `pdl serve` keeps the views up to date in a child process of "
        "its own (its own interpreter lock); in-process: in a thread of the server's own "
        "process; external: `pdl project` workers do (PostgreSQL deployments), and the server "
        "only reads them.",
    )
    projection_gather_seconds: float = Field(
        default=0.1,
        ge=0,
        le=5,
        description="How long the projections, told of new events, let more arrive before "
        "they fold them (fewer, larger transactions under steady recording); a read waiting "
        "for its min_position cuts it short.",
    )
    projection_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="With projections = 'process': how much lower the projection process's "
        "CPU priority is than the server's (added to its nice value; 0: the same). The views "
        "then fold on what the calls and the writer leave, and catch up when recording eases; "
        "a read waiting for its min_position still hurries them. Also the default of "
        "`pdl project --nice` for its workers.",
    )
    view_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Most a view query waits for the views to reach its min_position "
        "(read-your-writes) before answering UNAVAILABLE; the call's deadline may cut it shorter.",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="How long SIGTERM waits for in-flight calls."
    )

    @model_validator(mode="after")
    def _certificates_can_name(self) -> Self:
        """A principal named by its client certificate needs mutual TLS, or it could never
        authenticate."""
        mutual = self.tls is not None and self.tls.client_ca_file is not None
        if not mutual:
            named = [p.name for p in self.principals if p.tls_client_subject]
            if named:
                msg = (
                    f"principals {', '.join(map(repr, named))} are named by a client "
                    "certificate, but mutual TLS is not configured (tls.client_ca_file)"
                )
                raise ValueError(msg)
        return self

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def admin_token_path(self) -> Path:
        return self.admin_token_file or self.data_dir / "admin.token"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from a TOML file, then `PDL_*` variables, then explicit overrides."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data.update(tomllib.loads(config_file.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_file} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"{config_file} is not UTF-8 text") from None
    origins = dict.fromkeys(data, str(config_file))
    env = os.environ if environ is None else environ
    for name in Settings.model_fields:
        if name in _FILE_ONLY:
            continue
        value = env.get(_ENV_PREFIX + name.upper())
        if value is not None and value != "":
            data[name] = value
            origins[name] = _ENV_PREFIX + name.upper()
    for name, value in overrides.items():
        if value is not None:
            data[name] = value
            origins[name] = "--" + name.replace("_", "-")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e, origins) for e in exc.errors())
        raise ConfigurationError(f"invalid settings: {problems}") from None


def _problem(error: Any, origins: dict[str, str]) -> str:
    """One validation error as `field (from where it was set): message`."""
    where = ".".join(str(p) for p in error["loc"])
    origin = origins.get(str(error["loc"][0])) if error["loc"] else None
    message = str(error["msg"]).removeprefix("Value error, ")
    if not where:  # a check of the settings as a whole
        return message
    return f"{where} (from {origin}): {message}" if origin else f"{where}: {message}"
