"""Sealing of personal values: per-subject AES-256-GCM data keys wrapped by a master key.

Values are sealed field by field with a fresh nonce; the associated data binds the subject
and the field, so a sealed value moved to another subject or field fails to open. Subjects are
found by a keyed hash (HMAC) of (namespace, account id); an unkeyed hash is never kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from typing import Protocol
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ledger.errors import KeyShreddedError, SealingError

_NONCE_BYTES = 12
_KEY_BYTES = 32
_SEAL_PREFIX = "s1:"
"""A value sealed with its associated data naming the subject and the field."""
_VALUE_PREFIX = "s2:"
"""A collected or corrected value sealed with its associated data naming the subject, the
category and the field, so that it opens as nothing else (`seal`'s `category`)."""
SEALED_PREFIXES = (_SEAL_PREFIX, _VALUE_PREFIX)


class KeyStore(Protocol):
    """Where wrapped per-subject data keys and account look-ups live, apart from the events."""

    def register(self, lookup: bytes, subject_id: UUID, wrapped_key: bytes) -> UUID:
        """Store the look-up and key unless the look-up exists; return the subject it names."""

    def find(self, lookup: bytes) -> UUID | None:
        """The subject a look-up hash names, if any."""

    def wrapped_key(self, subject_id: UUID) -> bytes | None:
        """The subject's wrapped data key, or None once shredded (or never made)."""

    def shred(self, subject_id: UUID) -> bool:
        """Destroy the subject's key and look-up; True if there was anything to destroy."""

    def close(self) -> None:
        """Release connections."""


class MemoryKeyStore:
    """A key store in process memory: for tests and the in-memory back-end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lookups: dict[bytes, UUID] = {}
        self._keys: dict[UUID, bytes] = {}

    def register(self, lookup: bytes, subject_id: UUID, wrapped_key: bytes) -> UUID:
        with self._lock:
            existing = self._lookups.get(lookup)
            if existing is not None:
                return existing
            self._lookups[lookup] = subject_id
            self._keys.setdefault(subject_id, wrapped_key)
            return subject_id

    def find(self, lookup: bytes) -> UUID | None:
        with self._lock:
            return self._lookups.get(lookup)

    def wrapped_key(self, subject_id: UUID) -> bytes | None:
        with self._lock:
            return self._keys.get(subject_id)

    def shred(self, subject_id: UUID) -> bool:
        with self._lock:
            had_key = self._keys.pop(subject_id, None) is not None
            stale = [k for k, v in self._lookups.items() if v == subject_id]
            for k in stale:
                del self._lookups[k]
            return had_key or bool(stale)

    def close(self) -> None:
        """Nothing to release."""


class MasterKey:
    """The ledger's root secret; sub-keys for wrapping, look-ups and digests derive from it."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != _KEY_BYTES:
            msg = f"master key must be {_KEY_BYTES} bytes, got {len(secret)}"
            raise SealingError(msg)
        self._wrap = _derive(secret, b"pdl wrap v1")
        self._lookup = _derive(secret, b"pdl lookup v1")
        self._digest = hmac.new(_derive(secret, b"pdl digest v1"), digestmod=hashlib.sha256)
        self._check = _derive(secret, b"pdl key check v1")

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(_KEY_BYTES))

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._wrap, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._wrap, wrapped)
        except InvalidUnwrap:
            raise SealingError("data key does not unwrap under this master key") from None

    def lookup(self, namespace: str, account_id: str) -> bytes:
        """Keyed hash of (namespace, account id): the only look-up to a subject."""
        ns = namespace.encode()
        message = len(ns).to_bytes(4, "big") + ns + account_id.encode()
        return hmac.new(self._lookup, message, hashlib.sha256).digest()

    def check_value(self) -> bytes:
        """A value that names this key without revealing it (nor any key derived from it): a
        store keeps it to tell, when it is opened again, whether it is given the same key."""
        return self._check

    def digest(self, data: bytes) -> str:
        """Keyed digest of a command's canonical bytes, for idempotency comparisons."""
        mac = self._digest.copy()
        mac.update(data)
        return mac.hexdigest()

    def __repr__(self) -> str:
        return "MasterKey(<secret>)"


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(secret)


class Sealer:
    """Seals and opens personal values with each subject's own data key."""

    def __init__(self, master: MasterKey, store: KeyStore, cache_size: int = 4096) -> None:
        self._master = master
        self._store = store
        self._cache: OrderedDict[UUID, AESGCM] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def master(self) -> MasterKey:
        return self._master

    @property
    def store(self) -> KeyStore:
        return self._store

    def new_wrapped_key(self) -> bytes:
        return self._master.wrap(AESGCM.generate_key(bit_length=_KEY_BYTES * 8))

    def seal(self, subject_id: UUID, field: str, value: str, *, category: str | None = None) -> str:
        """Seal a value of the subject's; a value of a category (collected, corrected, or
        where it is kept) names it, and then opens only as that category's field."""
        nonce = os.urandom(_NONCE_BYTES)
        prefix, aad = (
            (_SEAL_PREFIX, _aad(subject_id, field))
            if category is None
            else (_VALUE_PREFIX, _value_aad(subject_id, category, field))
        )
        sealed = self._cipher(subject_id).encrypt(nonce, value.encode(), aad)
        return prefix + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(
        self, subject_id: UUID, field: str, sealed: str, *, category: str | None = None
    ) -> str:
        """Open a value sealed by `seal` with the same field (and category, for a value of
        one; a value sealed before categories were named opens without)."""
        if sealed.startswith(_VALUE_PREFIX):
            if category is None:
                raise SealingError(f"field {field!r} is a category's value: name the category")
            aad = _value_aad(subject_id, category, field)
        elif sealed.startswith(_SEAL_PREFIX):
            aad = _aad(subject_id, field)
        else:
            raise SealingError(f"field {field!r} is not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEAL_PREFIX) :])
        except ValueError:
            raise SealingError(f"field {field!r} is not valid base64") from None
        if len(raw) < _NONCE_BYTES + 16:
            raise SealingError(f"field {field!r} is too short to be a sealed value")
        self.check_held(subject_id)
        cipher = self._cipher(subject_id)
        try:
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealingError(f"field {field!r} does not open for this subject") from None
        return plain.decode()

    def check_held(self, subject_id: UUID) -> None:
        """Raise `KeyShreddedError` when the store no longer holds the person's key: another
        process (the server's writer, another server) may have shredded it, and the key
        cached here must not serve what the store no longer can."""
        if self._store.wrapped_key(subject_id) is None:
            self.forget(subject_id)
            raise KeyShreddedError(f"no data key for subject {subject_id}")

    def forget(self, subject_id: UUID) -> None:
        """Drop a cached key (after shredding)."""
        with self._lock:
            self._cache.pop(subject_id, None)

    def shred(self, subject_id: UUID) -> bool:
        """Destroy the subject's key in the store and in this process's cache."""
        self.forget(subject_id)
        return self._store.shred(subject_id)

    def _cipher(self, subject_id: UUID) -> AESGCM:
        with self._lock:
            cipher = self._cache.get(subject_id)
            if cipher is not None:
                self._cache.move_to_end(subject_id)
                return cipher
        wrapped = self._store.wrapped_key(subject_id)
        if wrapped is None:
            raise KeyShreddedError(f"no data key for subject {subject_id}")
        cipher = AESGCM(self._master.unwrap(wrapped))
        with self._lock:
            self._cache[subject_id] = cipher
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return cipher


def _aad(subject_id: UUID, field: str) -> bytes:
    return subject_id.bytes + field.encode()


def _value_aad(subject_id: UUID, category: str, field: str) -> bytes:
    """Neither a category id nor a field name holds a NUL, and the UUID has a fixed length."""
    return b"pdl.value\0" + subject_id.bytes + category.encode() + b"\0" + field.encode()
