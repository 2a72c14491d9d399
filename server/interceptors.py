"""Cross-cutting concerns of every call: authentication and scopes, errors to status, a log line.

The interceptor wraps each method handler of the ledger's services: it authenticates the
caller, checks the method's scope, puts the principal in `CURRENT_PRINCIPAL` for the
servicer, turns any error into its gRPC status (rich details included), and writes one
structured log line per call: principal, method, status, latency. Health checks and
reflection pass through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import grpc
from grpc import aio

from server.auth import CURRENT_PRINCIPAL, Principal, PrincipalRegistry, authorize
from server.errors import FieldViolation, InvalidRequest, StatusParts, status_of
from server.settings import Scope
from server.write_health import WriteHealth

_access = logging.getLogger("pdl.access")
_errors = logging.getLogger("pdl.errors")
_DETAILS_KEY = "grpc-status-details-bin"
_STORAGE_FULL = "STORAGE_FULL"
_STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"

Unary = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
Streaming = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


class LedgerInterceptor(aio.ServerInterceptor):
    """Authenticates, authorises, translates errors and logs every call of the ledger's API."""

    def __init__(
        self, registry: PrincipalRegistry, scopes: Mapping[str, Scope], *, tls: bool = False
    ) -> None:
        self._registry = registry
        self._scopes = dict(scopes)
        self._tls = tls
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._writes = frozenset(m for m, s in scopes.items() if s in (Scope.RECORD, Scope.ADMIN))
        self.write_health: WriteHealth | None = None
        """Told when a write finds storage full, and when one succeeds while it was."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:  # a method's handler never changes: wrap it once
            return wrapped
        handler = await continuation(details)
        scope = self._scopes.get(method)
        if handler is None or scope is None:
            return handler
        wrapped = self._wrap(handler, method, scope)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str, scope: Scope
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler behind authentication, scopes, statuses and the log line. Its request
        arrives as bytes and is parsed inside (`_parser`): malformed bytes are the caller's
        INVALID_ARGUMENT, after the credential is checked, and the call is logged."""
        parse = _parser(handler.request_deserializer, method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(cast("Unary", handler.unary_unary), method, scope, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(cast("Streaming", handler.unary_stream), method, scope, parse),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, behaviour: Unary, method: str, scope: Scope, parse: _Parse) -> Unary:
        writes = method in self._writes

        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            who, code = "-", grpc.StatusCode.OK
            try:
                principal = self._authenticate(context)
                who = principal.name
                self._admit(principal, scope, method)
                response = await behaviour(parse(request), context)
                health = self.write_health
                if writes and health is not None and health.full:
                    await health.wrote()
                return response
            except (asyncio.CancelledError, aio.AbortError):
                code = _cancelled_or(context)
                raise
            except Exception as error:  # noqa: BLE001 (every error becomes a status)
                parts = status_of(error)
                code = parts.code
                if self.write_health is not None:
                    if parts.reason == _STORAGE_FULL:
                        await self.write_health.storage_full()
                    elif parts.reason == _STORAGE_UNAVAILABLE and writes:
                        await self.write_health.storage_unavailable()
                await _abort(context, parts, error, method)
            finally:
                _log_call(who, method, code, started)

        return call

    def _streaming(
        self, behaviour: Streaming, method: str, scope: Scope, parse: _Parse
    ) -> Streaming:
        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            who, code = "-", grpc.StatusCode.OK
            try:
                principal = self._authenticate(context)
                who = principal.name
                self._admit(principal, scope, method)
                async for response in behaviour(parse(request), context):
                    yield response
            except (asyncio.CancelledError, aio.AbortError, GeneratorExit):
                code = _cancelled_or(context)
                raise
            except Exception as error:  # noqa: BLE001 (every error becomes a status)
                parts = status_of(error)
                code = parts.code
                await _abort(context, parts, error, method)
            finally:
                _log_call(who, method, code, started)

        return call

    def _authenticate(self, context: aio.ServicerContext[Any, Any]) -> Principal:
        metadata: dict[str, str] = {}
        headers = 0
        for k, v in context.invocation_metadata() or ():
            key = k.lower()
            if key == "authorization":
                headers += 1
            if isinstance(v, str):
                metadata[key] = v
        subjects = _tls_subjects(context) if self._tls else []
        return self._registry.authenticate(metadata, subjects, headers=headers)

    @staticmethod
    def _admit(principal: Principal, scope: Scope, method: str) -> None:
        """Check the scope, then hand the principal to the servicer."""
        authorize(principal, scope, method)
        CURRENT_PRINCIPAL.set(principal)


def _tls_subjects(context: aio.ServicerContext[Any, Any]) -> list[str]:
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return []
    return [v.decode() for v in auth.get("x509_common_name", [])]


_Parse = Callable[[Any], Any]


def _parser(deserializer: Callable[[bytes], Any] | None, method: str) -> _Parse:
    """The request's parser: the generated deserializer, with malformed bytes refused as an
    `InvalidRequest` naming the message type (a handler taking bytes gets them as they are)."""
    if deserializer is None:
        return lambda request: request
    name = f"{method.rsplit('/', 1)[-1]}Request"

    def parse(request: bytes) -> Any:
        try:
            return deserializer(request)
        except Exception:  # noqa: BLE001 (protobuf's DecodeError, or bad UTF-8 in a string)
            raise InvalidRequest([FieldViolation("request", f"not a valid {name}")]) from None

    return parse


def _cancelled_or(context: aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status a call ended with that the handler did not set: its deadline passed, or
    the client cancelled it."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


async def _abort(
    context: aio.ServicerContext[Any, Any], parts: StatusParts, error: Exception, method: str
) -> None:
    if parts.code is grpc.StatusCode.INTERNAL:
        # The type only: an unexpected error's text is not known to be free of personal values.
        _errors.error("unexpected %s in %s", type(error).__name__, method)
    details = parts.rich_status().SerializeToString()
    await context.abort(parts.code, parts.message, trailing_metadata=((_DETAILS_KEY, details),))


def _log_call(principal: str, method: str, code: grpc.StatusCode, started: float) -> None:
    if _access.isEnabledFor(logging.INFO):
        ms = round((time.perf_counter() - started) * 1000, 3)
        # Principal names and method names are restricted to JSON-safe characters.
        line = f'{{"principal":"{principal}","method":"{method}","status":"{code.name}","ms":{ms}}}'
        # `_access.info(line)` but for its search of the stack for the caller, known to be here.
        record = _access.makeRecord(
            _access.name, logging.INFO, __file__, 0, line, (), None, "_log_call"
        )
        _access.handle(record)
