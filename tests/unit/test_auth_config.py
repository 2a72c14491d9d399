"""Credentials that could name two principals, or none, are refused when the server starts, and
callers whose credentials are ambiguous are refused when they call: the configuration, the
registry of principals, the TLS files."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from ledger.errors import ConfigurationError
from server.app import check_tls
from server.auth import PrincipalRegistry, token_hash
from server.errors import Unauthenticated
from server.settings import PrincipalConfig, Scope, TlsConfig, load_settings

_TOKEN = "t" * 43


def _registry(*principals: PrincipalConfig, admin: str | None = None) -> PrincipalRegistry:
    settings = load_settings(environ={}, principals=principals)
    return PrincipalRegistry.from_settings(settings, admin)


def _by_token(name: str, token: str = _TOKEN) -> PrincipalConfig:
    return PrincipalConfig(name=name, scopes=(Scope.READ,), token_sha256=token_hash(token).hex())


def test_two_principals_sharing_a_token_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="share one bearer token"):
        _registry(_by_token("a-read"), _by_token("b-record"))


def test_a_principal_named_admin_is_refused_as_the_servers_own() -> None:
    with pytest.raises(ConfigurationError, match=r"names must be unique: 'admin' \('admin' is"):
        _registry(_by_token("admin"), admin="u" * 43)


def test_two_authorization_headers_are_unauthenticated_even_if_one_is_good() -> None:
    registry = _registry(_by_token("reader"))
    header = {"authorization": f"Bearer {_TOKEN}"}

    assert registry.authenticate(header, []).name == "reader"
    with pytest.raises(Unauthenticated, match="more than one"):
        registry.authenticate(header, [], headers=2)


def test_a_certificate_name_outside_ascii_names_no_principal_and_breaks_no_one() -> None:
    """Constant-time comparison of text takes ASCII only: it used to raise, for everyone."""
    registry = PrincipalRegistry.from_settings(
        load_settings(
            environ={},
            tls=_tls_config(Path("c.pem"), Path("k.pem"), Path("ca.pem")),
            principals=(
                PrincipalConfig(
                    name="auditor", scopes=(Scope.AUDIT,), tls_client_subject="auditör"
                ),
                PrincipalConfig(name="plain", scopes=(Scope.READ,), tls_client_subject="plain"),
            ),
        ),
        None,
    )

    assert registry.authenticate({}, ["auditör"]).name == "auditor"
    assert registry.authenticate({}, ["plain"]).name == "plain"
    with pytest.raises(Unauthenticated, match="certificate names no principal"):
        registry.authenticate({}, ["nobody-ä"])


def test_a_principal_named_by_certificate_needs_mutual_tls() -> None:
    named = PrincipalConfig(name="svc", scopes=(Scope.READ,), tls_client_subject="svc")

    with pytest.raises(ConfigurationError, match="settings: principals 'svc' are named by a"):
        load_settings(environ={}, principals=(named,))


def test_a_token_hash_and_a_token_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        PrincipalConfig(
            name="svc",
            scopes=(Scope.READ,),
            token_sha256=token_hash(_TOKEN).hex(),
            token_file=tmp_path / "svc.token",
        )


def test_a_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "svc.token"
    path.write_text(_TOKEN)
    path.chmod(0o644)
    loose = PrincipalConfig(name="svc", scopes=(Scope.READ,), token_file=path)

    with pytest.raises(ConfigurationError, match="readable by others: run chmod 600"):
        _registry(loose)
    path.chmod(0o600)
    assert _registry(loose).authenticate({"authorization": f"Bearer {_TOKEN}"}, []).name == "svc"


def test_a_configuration_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    config = tmp_path / "pdl.toml"
    config.write_bytes(b'listen = "127.0.0.1:0"\n# \xff\xfe\n')

    with pytest.raises(ConfigurationError, match=r"pdl\.toml is not UTF-8 text"):
        load_settings(config, environ={})


# --- TLS files ------------------------------------------------------------------------------


def _tls_config(cert: Path, key: Path, ca: Path | None = None) -> TlsConfig:
    return TlsConfig(
        cert_file=cert, key_file=key, client_ca_file=ca, require_client_cert=ca is not None
    )


def _self_signed(
    directory: Path,
    name: str,
    *,
    ca: bool = True,
    valid: tuple[timedelta, timedelta] = (timedelta(minutes=-5), timedelta(days=1)),
    curve: ec.EllipticCurve | None = None,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + valid[0])
        .not_valid_after(now + valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_usable_tls_files_pass(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "server")

    check_tls(_tls_config(cert, key, ca=cert))


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("cert", "is not a PEM certificate chain"),
        ("key", "is not an unencrypted PEM private key"),
        ("other_key", "is not the key of the certificate"),
        ("ca", "is not a PEM bundle of CA certificates"),
        ("leaf_as_ca", "not a CA's"),
        ("expired", "not now"),
        ("not_yet_valid", "not now"),
        ("key_kind", "gRPC takes RSA, ECDSA"),
    ],
)
def test_unusable_tls_files_are_named_not_taken_for_a_port_problem(
    tmp_path: Path, broken: str, message: str
) -> None:
    cert, key = _self_signed(tmp_path, "server")
    ca = cert
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(os.urandom(64))
    if broken == "cert":
        cert = garbage
    elif broken == "key":
        key = garbage
    elif broken == "other_key":
        _, key = _self_signed(tmp_path, "other")
    elif broken == "leaf_as_ca":  # a client's own certificate pinned as the client CA
        ca, _ = _self_signed(tmp_path, "client", ca=False)
    elif broken == "expired":
        cert, key = _self_signed(tmp_path, "server", valid=(-timedelta(days=9), -timedelta(days=1)))
    elif broken == "not_yet_valid":
        cert, key = _self_signed(tmp_path, "server", valid=(timedelta(days=1), timedelta(days=9)))
    elif broken == "key_kind":
        cert, key = _self_signed(tmp_path, "server", curve=ec.BrainpoolP256R1())
    else:
        ca = garbage

    with pytest.raises(ConfigurationError, match=message):
        check_tls(_tls_config(cert, key, ca))
