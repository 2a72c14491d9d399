"""Requests the end-to-end tests send again and again, built in one place."""

from __future__ import annotations

from typing import Any

from scenario import secret

from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server.client import meta, subject

IP = "network_log.ip_address"
"""The category collected by default (not sensitive): network logs' IP address."""


def ip_collection(subject_id: str, **fields: Any) -> lpb.RecordCollectionRequest:
    """A collection of an IP address for security detection; a fresh key and a fresh sealed
    value unless `meta` or `values` say otherwise."""
    fields.setdefault("values", {"ip": secret("ip")})
    return lpb.RecordCollectionRequest(
        meta=fields.pop("meta", None) or meta(),
        subject=subject(subject_id),
        category=IP,
        source="server_logs",
        purposes=["security_detection"],
        **fields,
    )
