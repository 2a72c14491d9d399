"""Who is calling: principals, their scopes and credentials, checked by an interceptor.

A bearer token (`authorization: Bearer <token>`) is hashed and compared in constant time with
the configured hashes; tokens are never kept in clear. With mutual TLS, a client certificate's
common name can name the principal instead. Each method needs one scope; health and
reflection need none. The principal reaches the servicers through a context variable, never
through a request field.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import ConfigurationError
from server.errors import PermissionDenied, Unauthenticated
from server.settings import PrincipalConfig, Scope, Settings

ADMIN = "admin"
_TOKEN_BYTES = 32

CURRENT_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("pdl_principal")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    scopes: frozenset[Scope]


@dataclass(frozen=True, slots=True)
class _Credential:
    principal: Principal
    token_sha256: bytes | None
    tls_subject: str | None


def token_hash(token: str) -> bytes:
    """SHA-256 of a token: what is kept and compared."""
    return hashlib.sha256(token.encode()).digest()


class PrincipalRegistry:
    """The configured principals, looked up by credential."""

    def __init__(self, credentials: Iterable[_Credential]) -> None:
        self._credentials = tuple(credentials)
        _refuse_repeats("name", [c.principal.name for c in self._credentials])
        hashes = [c.token_sha256 for c in self._credentials if c.token_sha256 is not None]
        if len(hashes) != len(set(hashes)):
            # the token would name whichever came first or last: refuse, naming none of it
            raise ConfigurationError("two principals share one bearer token; give each its own")
        _refuse_repeats(
            "tls_client_subject", [c.tls_subject for c in self._credentials if c.tls_subject]
        )

    @classmethod
    def from_settings(cls, settings: Settings, admin_token: str | None) -> PrincipalRegistry:
        creds = [_credential(p) for p in settings.principals]
        if admin_token is not None:
            creds.append(
                _Credential(Principal(ADMIN, frozenset(Scope)), token_hash(admin_token), None)
            )
        return cls(creds)

    def by_token(self, token: str) -> Principal | None:
        """The principal holding `token`; every stored hash is compared, in constant time."""
        presented = token_hash(token)
        found = None
        for cred in self._credentials:
            if cred.token_sha256 is not None and hmac.compare_digest(cred.token_sha256, presented):
                found = cred.principal
        return found

    def by_tls_subject(self, subject: str) -> Principal | None:
        presented = subject.encode()  # compare_digest takes ASCII text only: compare bytes
        for cred in self._credentials:
            if cred.tls_subject is not None and hmac.compare_digest(
                cred.tls_subject.encode(), presented
            ):
                return cred.principal
        return None

    def authenticate(
        self, metadata: Mapping[str, str], tls_subjects: Iterable[str], *, headers: int = 1
    ) -> Principal:
        """The caller, from its bearer token or else its client certificate; `headers` is how
        many `authorization` headers the call carried (more than one is refused: a proxy and
        this server could each read another)."""
        if headers > 1:
            raise Unauthenticated("more than one authorization header")
        header = metadata.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("malformed authorization header: use 'Bearer <token>'")
            principal = self.by_token(token.strip())
            if principal is None:
                raise Unauthenticated("unknown bearer token")
            return principal
        presented = list(tls_subjects)
        for subject in presented:
            principal = self.by_tls_subject(subject)
            if principal is not None:
                return principal
        if presented:
            raise Unauthenticated("the client certificate names no principal; send a bearer token")
        raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")


def authorize(principal: Principal, scope: Scope, method: str) -> None:
    if scope not in principal.scopes:
        raise PermissionDenied(f"{method} needs the {scope.value!r} scope")


def _refuse_repeats(what: str, values: list[str]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        shown = ", ".join(repr(v) for v in repeated)
        reserved = f" ({ADMIN!r} is the server's own)" if ADMIN in repeated else ""
        raise ConfigurationError(f"principal {what}s must be unique: {shown}{reserved}")


def _credential(p: PrincipalConfig) -> _Credential:
    digest = bytes.fromhex(p.token_sha256) if p.token_sha256 is not None else None
    if p.token_file is not None:
        _refuse_loose(p.token_file)
        digest = token_hash(read_secret_file(p.token_file))
    return _Credential(Principal(p.name, frozenset(p.scopes)), digest, p.tls_client_subject)


def _refuse_loose(path: Path) -> None:
    """A file holding a token must be readable by its owner only."""
    try:
        loose = path.stat().st_mode & 0o077
    except OSError:
        return  # reading it says what is wrong
    if loose:
        raise ConfigurationError(f"{path} is readable by others: run chmod 600 {path}")


def read_secret_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} is not UTF-8 text") from None
    if not text:
        raise ConfigurationError(f"{path} is empty")
    return text


def load_or_create_admin_token(path: Path) -> tuple[str, bool]:
    """The admin's bearer token from its owner-only file, made on first run; True if made."""
    if path.exists():
        _refuse_loose(path)
        return read_secret_file(path), False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = new_token()
    try:
        write_token_file(path, token)
    except FileExistsError:
        return read_secret_file(path), False
    return token, True


def new_token() -> str:
    """A new random bearer token."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def write_token_file(path: Path, token: str) -> None:
    """Write a bearer token durably to a new owner-only file (`FileExistsError` if there is
    one already: a token is never overwritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise  # the caller's to decide
    except OSError as exc:
        raise ConfigurationError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
