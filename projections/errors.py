"""Errors of the view queries: a bad filter, page size or page token, and an unknown version.

A person the views do not know is `ledger.errors.SubjectNotFound`, as everywhere else.
"""

from __future__ import annotations

__all__ = ["BadQuery", "PolicyVersionNotFound"]


class BadQuery(ValueError):
    """A query's argument is out of range or malformed; `field` names it, never its value."""

    def __init__(self, field: str, problem: str) -> None:
        self._field = field
        self._problem = problem
        super().__init__(f"{field}: {problem}")

    @property
    def field(self) -> str:
        return self._field

    @property
    def problem(self) -> str:
        return self._problem


class PolicyVersionNotFound(LookupError):
    """No policy version of that name was published (as far as the views have folded)."""

    def __init__(self, version: str) -> None:
        self._version = version
        super().__init__("unknown policy version")

    @property
    def version(self) -> str:
        return self._version
