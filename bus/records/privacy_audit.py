"""The audit event of an erasure, on `dastra.privacy-audit.v1` (CloudEvents binary mode).

Consumes an `ErasureAudit` (what `bus/privacy/erasure.py` or the poller's automatic erasure
erased, where, when and by whom). Produces its record: key = audit id, `ce_type`
`eu.dastra.privacy.erased`, the JSON value. No personal data: subject ids are keyed hashes.

    key, value, headers = audit_record(audit)
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.envelope import RecordHeaders, encode_binary, new_event

__all__ = ["AUDIT_EVENT_TYPE", "AuditRequest", "ErasureAudit", "audit_record"]

AUDIT_EVENT_TYPE = "eu.dastra.privacy.erased"
_AUDIT_SOURCE = "dastra-kafka://privacy"


class AuditRequest(BaseModel):
    """What was asked: the ids of a rights request, or the subject id of an e-mail."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["email", "rights-request"]
    subject: str = Field(description="The keyed hash of the subject (never the e-mail itself)")
    workspace_id: int | None = None
    rights_request_id: int | None = None


class ErasureAudit(BaseModel):
    """The audit event of one erasure (value on dastra.privacy-audit.v1, key = audit id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    audit_id: str
    at: datetime
    by: str = Field(description="Who ran it: the --by text of the CLI, or `poller`")
    trigger: Literal["manual", "auto"] = Field(
        description="manual: `dastra-kafka privacy erase`; auto: the poller saw an Erasure "
        "rights request closed (PRIVACY_AUTO_ERASE)"
    )
    request: AuditRequest
    subjects: list[str] = Field(description="Subject ids erased (the person's aliases linked)")
    key_ids: list[str] = Field(description="Data keys deleted (tombstoned)")
    erased_markers: int = Field(description="Dastra objects marked erased for the future")
    tombstones: dict[str, int] = Field(description="Tombstones written, per topic")
    unreadable_records: dict[str, int] | None = Field(
        default=None,
        description="Records sealed with the deleted keys, per topic: unreadable from now on "
        "(null: not counted)",
    )


def audit_record(audit: ErasureAudit) -> tuple[bytes, bytes, RecordHeaders]:
    """Key, value and headers of the audit event (CloudEvents binary mode)."""
    headers, value = encode_binary(
        new_event(
            type=AUDIT_EVENT_TYPE,
            source=_AUDIT_SOURCE,
            id=audit.audit_id,
            subject=audit.request.subject,
            time=audit.at,
            data=audit.model_dump(mode="json"),
        )
    )
    assert value is not None
    return audit.audit_id.encode(), value, headers
