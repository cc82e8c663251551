"""Realistic example records of every topic, for the AsyncAPI document and docs/topics.md.

The tests check that each one validates against the schemas of its topic (key, value, headers)
and parses with the code's own models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.records.commands import command_record_key, parse_command

__all__ = ["EXAMPLES", "RecordExample"]


@dataclass(frozen=True)
class RecordExample:
    """One example record: key (text, None: no key), value (JSON, None: a tombstone), headers."""

    name: str
    summary: str
    key: str | None
    value: Any
    headers: Mapping[str, str] = field(default_factory=dict)


def _event_headers(
    entity: str, kind: str, ws: int, item: int, when: str, extra: str = ""
) -> dict[str, str]:
    return {
        "ce_specversion": "1.0",
        "ce_id": f"dastra:{ws}:{entity}.{kind}:{item}{extra}",
        "ce_source": f"dastra://workspaces/{ws}",
        "ce_type": f"eu.dastra.{entity}.{kind}",
        "ce_time": when,
        "ce_subject": str(item),
        "content-type": "application/json",
    }


_USER = {
    "id": 58,
    "displayName": "Claire Martin",
    "givenName": "Claire",
    "familyName": "Martin",
    "email": "claire.martin@acme.example",
    "avatarUrl": None,
}

_RIGHTS_REQUEST = {
    "id": 4521,
    "title": "Access request from Jeanne Dupont",
    "locale": "fr",
    "state": "Open",
    "channel": "Form",
    "purposes": ["Access", "Erasure"],
    "personCategory": "Client",
    "areaId": 12,
    "area": {"id": 12, "label": "ACME France", "type": "Entity", "parentId": None},
    "email": "jeanne.dupont@example.org",
    "givenName": "Jeanne",
    "familyName": "Dupont",
    "phoneNumber": None,
    "countryCode": "FR",
    "refId": "crm-88412",
    "description": "Please send me a copy of my data and then delete my account.",
    "complex": False,
    "archived": False,
    "workFlowStepId": 3,
    "workFlowStep": {"id": 3, "label": "New", "color": "#2f80ed", "order": 1},
    "creator": _USER,
    "tags": [],
    "remainingDays": 30,
    "dateCreation": "2026-03-02T09:14:07.310Z",
    "dateUpdate": None,
    "expiryTime": "2026-04-01T09:14:07.310Z",
    "emailValidationDate": "0001-01-01T00:00:00",
    "attachments": [],
}

_TASK = {
    "id": 918,
    "label": "Send the access report to Jeanne Dupont",
    "descriptionHtml": "<p>Export the CRM and billing data, then reply within the deadline.</p>",
    "state": "Active",
    "priority": "High",
    "deadline": "2026-03-20T17:00:00Z",
    "areaId": 12,
    "workspaceId": 101,
    "ownerId": 58,
    "owner": _USER,
    "assignedToUserId": 58,
    "assignedToUser": _USER,
    "objectType": "DataSubject",
    "objectId": "4521",
    "workFlowStepId": 7,
    "archived": False,
    "tags": [{"id": 4, "label": "DSR", "color": "#eb5757"}],
    "dateCreation": "2026-03-02T09:20:41.002Z",
    "dateUpdate": "2026-03-03T11:02:13.540Z",
    "dateActivated": "2026-03-03T11:02:13.540Z",
    "descriptionPlainText": "Export the CRM and billing data, then reply within the deadline.",
    "children": [],
}

_COMMANDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "create-task": (
        "crm-88412-followup",
        "Create a follow-up task attached to a rights request",
        {
            "workspaceId": 101,
            "label": "Call Jeanne Dupont back",
            "descriptionHtml": "<p>She asked for a phone call about her erasure request.</p>",
            "priority": "Medium",
            "deadline": "2026-03-10T12:00:00Z",
            "areaId": 12,
            "objectType": "DataSubject",
            "objectId": "4521",
        },
    ),
    "create-actor": (
        "vendor-mailjet",
        "Register a new vendor (a legal person)",
        {
            "companyName": "Mailjet SAS",
            "email": "dpo@mailjet.example",
            "countryCode": "FR",
            "vendorType": "B2B",
            "websiteUrl": "https://www.mailjet.example",
            "logoUrl": "https://www.mailjet.example/logo.png",
            "tags": ["E-mailing", {"label": "Critical vendor", "color": "#eb5757"}],
        },
    ),
    "create-rights-request": (
        "crm-88413",
        "Open a rights request received by the customer service",
        {
            "workspaceId": 101,
            "title": "Erasure request from Marc Leroy",
            "locale": "fr",
            "purposes": ["Erasure"],
            "email": "marc.leroy@example.org",
            "givenName": "Marc",
            "familyName": "Leroy",
            "channel": "Internal",
            "personCategory": "FormerClient",
            "refId": "crm-88413",
            "expiryTime": "2026-04-02T23:59:59Z",
            "tags": ["CRM"],
            "customFields": {"customer-number": "C-20931", "contract-ended": True},
        },
    ),
    "link-actor-to-processing": (
        "link-mailjet-newsletter",
        "Declare a vendor as recipient of the newsletter processing",
        {
            "actorIds": [311],
            "dataProcessingId": "0b6c4a52-3f4e-5d1a-9a63-7c1e2f0d8e44",
            "type": "Recipient",
            "recipientType": "Vendor",
        },
    ),
    "search-actors": (
        "search-salesforce",
        "Look up actors by company name",
        {"companyName": "Salesforce", "limit": 5},
    ),
    "find-or-create-actor": (
        "actor-privacy@ovhcloud.example",
        "Find the actor with this e-mail, or create it",
        {
            "companyName": "OVHcloud",
            "email": "privacy@ovhcloud.example",
            "countryCode": "FR",
            "vendorType": "B2B",
        },
    ),
}


def _command(action: str) -> tuple[RecordExample, ...]:
    key, summary, data = _COMMANDS[action]
    # Actor commands are keyed by the actor (a pseudonym of its e-mail) and link commands by the
    # processing, as the webhook does; the others by the producer's own key.
    key = command_record_key(action, parse_command(action, data), key).decode()
    binary = RecordExample(
        name=f"{action}-binary",
        summary=summary + " (CloudEvents binary mode)",
        key=key,
        value=data,
        headers={
            "ce_specversion": "1.0",
            "ce_id": f"9f1c2e7a-{action}",
            "ce_source": "urn:acme:crm",
            "ce_type": f"eu.dastra.command.{action}",
            "ce_time": "2026-03-02T10:00:00Z",
            "content-type": "application/json",
        },
    )
    plain = RecordExample(
        name=f"{action}-plain",
        summary=summary + " (plain JSON, no headers: the command id is topic/partition/offset)",
        key=key,
        value=data,
    )
    return binary, plain


_RESULT_OK = {
    "command_id": "9f1c2e7a-create-task",
    "action": "create-task",
    "status": "succeeded",
    "workspace_id": 101,
    "result": {
        "id": 919,
        "label": "Call Jeanne Dupont back",
        "state": "Open",
        "priority": "Medium",
        "objectType": "DataSubject",
        "objectId": "4521",
        "dateCreation": "2026-03-02T10:00:01.120Z",
    },
    "error": None,
    "attempts": 1,
    "received_at": "2026-03-02T10:00:00.412Z",
    "completed_at": "2026-03-02T10:00:01.187Z",
    "source_topic": "dastra.commands.create-task.v1",
    "source_partition": 2,
    "source_offset": 1184,
}

_RESULT_FAILED = {
    "command_id": "dastra.commands.create-actor.v1/4/77",
    "action": "create-actor",
    "status": "failed",
    "workspace_id": 101,
    "result": None,
    "error": {
        "kind": "dastra-rejected",
        "message": "Dastra answered 400 Bad Request",
        "status": 400,
        "field_errors": {"CountryCode": ["The country code is unknown."]},
    },
    "attempts": 1,
    "received_at": "2026-03-02T10:05:12.004Z",
    "completed_at": "2026-03-02T10:05:12.391Z",
    "source_topic": "dastra.commands.create-actor.v1",
    "source_partition": 4,
    "source_offset": 77,
}

_KID = "k_6a0f3c9e1b7d4e2a8c5f0b3d9e7a1c4f"
_SUBJECT = "s_9c1e7a3f5b0d2e4a6c8f1b3d5e7a9c0e"
_EMAIL_SUBJECT = "s_2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e0b"


def _sealed(iv: str, ct: str) -> dict[str, str]:
    return {"$enc": "aes-256-gcm", "kid": _KID, "iv": iv, "ct": ct}


_RIGHTS_REQUEST_ENCRYPTED = {
    **_RIGHTS_REQUEST,
    "title": _sealed("4Vq0c2Hk1xGf9Lmb", "pJ1cQ0n7yJb3ZqkqLk8m0m3b2H6f1Dq9Xr0Yw4Qe0Vp6Uq=="),
    "email": _sealed("m7Pq2Rb0c9XkT1Zd", "Qm3c8Yd1Vb6Hn2Lk9Fw0Tz4Rr7Ap5Ce1Dx0=="),
    "givenName": _sealed("Hq1Wc7Pz0Lm3Vb8N", "cHJpdmFjeS1leGFtcGxlLWNpcGhlcg=="),
    "familyName": _sealed("Zt5Yk2Qm9Cx4Rb1L", "ZXhhbXBsZS1jaXBoZXJ0ZXh0LTI="),
    "description": {"$erased": True},
    "creator": {
        **_USER,
        "displayName": _sealed("Rb3Vn8Mq1Lc6Xz0K", "dXNlci1kaXNwbGF5LW5hbWU="),
        "givenName": _sealed("Pk0Wz5Yt2Qm7Cn4H", "dXNlci1naXZlbi1uYW1l"),
        "familyName": _sealed("Lc9Xb4Rn1Vm6Kq3T", "dXNlci1mYW1pbHktbmFtZQ=="),
        "email": _sealed("Nq2Hz7Wc0Pk5Yb8M", "dXNlci1lbWFpbC1hZGRyZXNz"),
    },
}

_TASK_THIN = {
    "id": 918,
    "state": "Active",
    "priority": "High",
    "deadline": "2026-03-20T17:00:00Z",
    "areaId": 12,
    "workspaceId": 101,
    "ownerId": 58,
    "assignedToUserId": 58,
    "objectType": "DataSubject",
    "objectId": "4521",
    "workFlowStepId": 7,
    "archived": False,
    "dateCreation": "2026-03-02T09:20:41.002Z",
    "dateUpdate": "2026-03-03T11:02:13.540Z",
    "dateActivated": "2026-03-03T11:02:13.540Z",
    "dataref": "/v1/ws/101/Tasks/918",
}

_RECIPE_RUN = {
    "recipe": "vendor-onboarded-link-processing",
    "run_key": "procurement:onboarding:V-311",
    "status": "succeeded",
    "trigger": {
        "event_id": "procurement:onboarding:V-311",
        "event_type": "com.acme.procurement.vendor.onboarded",
        "topic": "procurement.vendor-onboarded",
        "partition": 0,
        "offset": 57,
        "timestamp_ms": 1772442000000,
    },
    "steps": {
        "actor": {
            "status": "succeeded",
            "command_ids": [
                "recipe:vendor-onboarded-link-processing:procurement:onboarding:V-311:actor"
            ],
            "completed_at": "2026-03-02T10:00:00.871Z",
        },
        "link": {
            "status": "succeeded",
            "command_ids": [
                "recipe:vendor-onboarded-link-processing:procurement:onboarding:V-311:link"
            ],
            "completed_at": "2026-03-02T10:00:01.402Z",
        },
    },
    "error": None,
    "started_at": "2026-03-02T10:00:00.112Z",
    "updated_at": "2026-03-02T10:00:01.405Z",
    "finished_at": "2026-03-02T10:00:01.405Z",
}

_STUDIO_VERSION = {
    "name": "web-form-request",
    "version": 2,
    "change": "saved",
    "recipe": {
        "name": "web-form-request",
        "description": "A web form submission becomes a rights request.",
        "enabled": True,
        "trigger": {"topic": "web.privacy-forms"},
        "steps": [
            {
                "id": "request",
                "command": "create-rights-request",
                "with": {
                    "title": "Web form {{ data.formId }}",
                    "purposes": ["Access"],
                    "email": "{{ data.email }}",
                    "refId": "web-{{ data.formId }}",
                },
            }
        ],
    },
    "saved_by": "tok_0a1b2c3d4e5f",
    "saved_at": "2026-03-02T09:14:07Z",
}

EXAMPLES: dict[str, tuple[RecordExample, ...]] = {
    "dastra.rights-requests.v1": (
        RecordExample(
            name="rights-request-created",
            summary="A new access and erasure request, as Dastra returned it",
            key="101:4521",
            value=_RIGHTS_REQUEST,
            headers=_event_headers(
                "rights_request", "created", 101, 4521, "2026-03-02T09:14:07.31Z"
            ),
        ),
        RecordExample(
            name="rights-request-encrypted",
            summary="The same request in the encrypted payload mode: personal fields sealed with "
            "the data key of its subject (the description shows a field already erased)",
            key="101:4521",
            value=_RIGHTS_REQUEST_ENCRYPTED,
            headers={
                **_event_headers("rights_request", "created", 101, 4521, "2026-03-02T09:14:07.31Z"),
                "ce_dastrapayload": "encrypted",
            },
        ),
    ),
    "dastra.tasks.v1": (
        RecordExample(
            name="task-updated",
            summary="A task of the action plan became active",
            key="101:918",
            value=_TASK,
            headers=_event_headers(
                "task", "updated", 101, 918, "2026-03-03T11:02:13.54Z", ":2026-03-03T11:02:13.540Z"
            ),
        ),
        RecordExample(
            name="task-updated-thin",
            summary="The same change in the thin payload mode: ids, state and dates, and the "
            "Dastra API path to fetch the task with your own credentials",
            key="101:918",
            value=_TASK_THIN,
            headers={
                **_event_headers(
                    "task",
                    "updated",
                    101,
                    918,
                    "2026-03-03T11:02:13.54Z",
                    ":2026-03-03T11:02:13.540Z",
                ),
                "ce_dastrapayload": "thin",
            },
        ),
    ),
    **{f"dastra.commands.{action}.v1": _command(action) for action in _COMMANDS},
    "dastra.command-results.v1": (
        RecordExample(
            name="result-succeeded",
            summary="The task was created; its Dastra object is the result",
            key="9f1c2e7a-create-task",
            value=_RESULT_OK,
            headers={
                "ce_specversion": "1.0",
                "ce_id": "result:9f1c2e7a-create-task",
                "ce_source": "dastra-kafka/agents",
                "ce_type": "eu.dastra.command.succeeded",
                "ce_time": "2026-03-02T10:00:01.187Z",
                "ce_subject": "9f1c2e7a-create-task",
                "content-type": "application/json",
            },
        ),
        RecordExample(
            name="result-failed",
            summary="Dastra refused a plain-JSON command (id derived from topic/partition/offset)",
            key="dastra.commands.create-actor.v1/4/77",
            value=_RESULT_FAILED,
            headers={
                "ce_specversion": "1.0",
                "ce_id": "result:dastra.commands.create-actor.v1/4/77",
                "ce_source": "dastra-kafka/agents",
                "ce_type": "eu.dastra.command.failed",
                "ce_time": "2026-03-02T10:05:12.391Z",
                "ce_subject": "dastra.commands.create-actor.v1/4/77",
                "content-type": "application/json",
            },
        ),
    ),
    "dastra.dead-letter.v1": (
        RecordExample(
            name="invalid-command",
            summary="A create-task command without its required label, kept byte for byte",
            key="crm-88414-followup",
            value={"priority": "High", "deadline": "2026-03-12T12:00:00Z"},
            headers={
                "ce_specversion": "1.0",
                "ce_id": "4d2b8f10-create-task",
                "ce_source": "urn:acme:crm",
                "ce_type": "eu.dastra.command.create-task",
                "content-type": "application/json",
                "dlq.error.kind": "invalid-command",
                "dlq.error.message": "label: Field required",
                "dlq.original.topic": "dastra.commands.create-task.v1",
                "dlq.original.partition": "1",
                "dlq.original.offset": "2051",
                "dlq.failed.at": "2026-03-02T10:07:44.018Z",
                "dlq.component": "agents",
                "dlq.attempts": "1",
            },
        ),
    ),
    "dastra.poller-state.v1": (
        RecordExample(
            name="cursor",
            summary="The poller's position in the rights requests of workspace 101",
            key="101:rights-requests",
            value={
                "workspace_id": 101,
                "resource": "rights-requests",
                "created": {"after": "2026-03-02T09:14:07.310000Z", "seen": [4521]},
                "updated": {"after": "2026-03-01T16:40:00.020000Z", "seen": [4470, 4471]},
                "written_at": "2026-03-02T09:14:09.118204Z",
            },
        ),
    ),
    "dastra.hook-subscriptions.v1": (
        RecordExample(
            name="subscription",
            summary="A Zapier REST hook for new rights requests of workspace 101",
            key="hook_6f1d0c9a4e2b4b7c9d3e8a1f5b2c7d90",
            value={
                "id": "hook_6f1d0c9a4e2b4b7c9d3e8a1f5b2c7d90",
                "event": "rights_request.created",
                "target_url": "https://hooks.zapier.com/hooks/standard/1234567/abcdef0123456789/",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "workspace_id": 101,
                "created_at": "2026-03-01T08:00:00Z",
            },
        ),
        RecordExample(
            name="subscription-deleted",
            summary="A tombstone: the subscription was deleted (DELETE /v1/hooks/{id} or 410 Gone)",
            key="hook_6f1d0c9a4e2b4b7c9d3e8a1f5b2c7d90",
            value=None,
        ),
    ),
    "dastra.poller-triggers.v1": (
        RecordExample(
            name="dastra-webhook",
            summary="Dastra's webhook said a rights request was created: poll workspace 101 now",
            key="101",
            value={
                "workspaceId": 101,
                "reason": "DataSubjectCreation",
                "at": "2026-03-02T09:14:08.002Z",
            },
        ),
    ),
    "dastra.notifications.v1": (
        RecordExample(
            name="high-priority-task",
            summary="The recipe high-priority-task-notification announces a new urgent task",
            key="101:918",
            value={
                "title": "High-priority task #918: Send the access report to Jeanne Dupont",
                "severity": "warning",
                "recipe": "high-priority-task-notification",
                "event": "task.created",
                "workspace_id": 101,
                "object_type": "Task",
                "object_id": "918",
                "data": {
                    "label": "Send the access report to Jeanne Dupont",
                    "deadline": "2026-03-20T17:00:00Z",
                    "assignedToUserId": 58,
                    "objectType": "DataSubject",
                    "objectId": "4521",
                },
            },
            headers={
                "ce_specversion": "1.0",
                "ce_id": (
                    "recipe:high-priority-task-notification:dastra:101:task.created:918:notify"
                ),
                "ce_source": "dastra-kafka://recipes/high-priority-task-notification",
                "ce_type": "eu.dastra.recipe.task.high_priority",
                "ce_time": "2026-03-02T09:20:43.118Z",
                "ce_subject": "918",
                "content-type": "application/json",
            },
        ),
    ),
    "dastra.recipes.v1": (
        RecordExample(
            name="studio-recipe-saved",
            summary="The second version of a studio recipe, saved with an editor token",
            key="web-form-request",
            value=_STUDIO_VERSION,
        ),
        RecordExample(
            name="studio-recipe-deleted",
            summary="A studio recipe deleted (tombstone)",
            key="old-web-form",
            value=None,
        ),
    ),
    "dastra.recipe-changes.v1": (
        RecordExample(
            name="studio-recipe-saved",
            summary="A save, as the audit trail keeps it",
            key="web-form-request",
            value=_STUDIO_VERSION,
        ),
        RecordExample(
            name="studio-recipe-deleted",
            summary="A deletion, as the audit trail keeps it",
            key="old-web-form",
            value={
                "name": "old-web-form",
                "version": 4,
                "change": "deleted",
                "recipe": None,
                "saved_by": "tok_0a1b2c3d4e5f",
                "saved_at": "2026-03-02T10:02:00Z",
            },
        ),
    ),
    "dastra.recipe-requests.v1": (
        RecordExample(
            name="send-once",
            summary="Run version 3 of a studio recipe once for a pasted web form",
            key="web-form-request",
            value={
                "kind": "send-once",
                "recipe": "web-form-request",
                "version": 3,
                "run_key": "studio:6f1c2a9e4b7d4e0a8c3f5b1d2e4a6c8e",
                "event": {
                    "data": {"formId": "F-1", "kind": "access", "consent": True},
                    "type": "com.acme.form.submitted",
                    "key": "F-1",
                    "source": None,
                    "subject": None,
                },
                "retry_of": None,
                "trigger": None,
                "steps": {},
                "requested_by": "tok_0a1b2c3d4e5f",
                "requested_at": "2026-03-02T10:05:00Z",
            },
            headers={
                "ce_specversion": "1.0",
                "ce_id": "studio:6f1c2a9e4b7d4e0a8c3f5b1d2e4a6c8e",
                "ce_source": "dastra-kafka://studio",
                "ce_type": "eu.dastra.studio.recipe.send_once",
                "ce_time": "2026-03-02T10:05:00Z",
                "content-type": "application/json",
            },
        ),
        RecordExample(
            name="retry",
            summary="Retry a failed run: its first step is read back, the second runs again",
            key="web-form-request",
            value={
                "kind": "retry",
                "recipe": "web-form-request",
                "version": None,
                "run_key": "web-F-7~retry-1",
                "event": None,
                "retry_of": "web-F-7",
                "trigger": {
                    "event_id": "F-7",
                    "event_type": "com.acme.form.submitted",
                    "topic": "web.privacy-forms",
                    "partition": 2,
                    "offset": 41,
                    "timestamp_ms": 1772442000000,
                },
                "steps": {
                    "request": {
                        "status": "succeeded",
                        "command_ids": ["recipe:web-form-request:web-F-7:request"],
                        "completed_at": "2026-03-02T10:00:00.871Z",
                    }
                },
                "requested_by": "tok_0a1b2c3d4e5f",
                "requested_at": "2026-03-02T10:12:00Z",
            },
            headers={
                "ce_specversion": "1.0",
                "ce_id": "studio:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a",
                "ce_source": "dastra-kafka://studio",
                "ce_type": "eu.dastra.studio.recipe.retry",
                "ce_time": "2026-03-02T10:12:00Z",
                "content-type": "application/json",
            },
        ),
    ),
    "dastra.recipe-runs.v1": (
        RecordExample(
            name="run-succeeded",
            summary="A vendor onboarding run: the actor found or created, then linked",
            key="vendor-onboarded-link-processing:procurement:onboarding:V-311",
            value=_RECIPE_RUN,
        ),
    ),
    "dastra.webhook-idempotency.v1": (
        RecordExample(
            name="claim",
            summary="A webhook replica claims an Idempotency-Key before producing the command",
            key="9f2c4e1b7a3d5f60c8e2b4a6d1f3e5c7a9b0d2f4e6a8c0b1d3f5e7a9c2b4d6e8",
            value={
                "state": "claim",
                "claim_id": "5d0b8f7e2a6c4e19b3d7f1a0c9e8b6d4",
                "command_id": "2f6c1a3e-8b7d-5f40-9c2e-6a1b3d5f7e90",
                "action": "create-task",
                "fingerprint": "b1e4f6a8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4",
                "at": "2026-03-02T09:14:07.120Z",
            },
        ),
        RecordExample(
            name="answer",
            summary="The first answer: every repeat of the key gets this command id back",
            key="9f2c4e1b7a3d5f60c8e2b4a6d1f3e5c7a9b0d2f4e6a8c0b1d3f5e7a9c2b4d6e8",
            value={
                "state": "answer",
                "claim_id": "5d0b8f7e2a6c4e19b3d7f1a0c9e8b6d4",
                "command_id": "2f6c1a3e-8b7d-5f40-9c2e-6a1b3d5f7e90",
                "action": "create-task",
                "fingerprint": "b1e4f6a8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4",
                "at": "2026-03-02T09:14:07.131Z",
                "topic": "dastra.commands.create-task.v1",
                "partition": 3,
                "offset": 1184,
            },
        ),
    ),
    "dastra.privacy-keys.v1": (
        RecordExample(
            name="data-key",
            summary="The data key of one data subject, wrapped by the master key",
            key=f"key:{_KID}",
            value={
                "type": "data-key",
                "kid": _KID,
                "subject": _SUBJECT,
                "scope": "object",
                "mkid": "mk_3f9a1c7e5b2d4f60",
                "alg": "aes-256-gcm",
                "iv": "yq3Lm0Pc8Vb1Xz6N",
                "wrapped": "7Hc2Qn9Rb4Wm1Lz6Xk0Pv3Yt8Cd5Fe2Ga9Jb4Nm7Qs1Ur6Vw3Xy0Zt5Bc8Df==",
                "created_at": "2026-03-02T09:14:09.120Z",
                "created_by": "poller",
            },
        ),
        RecordExample(
            name="alias",
            summary="The subject's e-mail (as a keyed hash) names the same person",
            key=f"alias:{_EMAIL_SUBJECT}:{_SUBJECT}",
            value={
                "type": "alias",
                "alias": _EMAIL_SUBJECT,
                "subject": _SUBJECT,
                "created_at": "2026-03-02T09:14:09.120Z",
            },
        ),
        RecordExample(
            name="erased-key",
            summary="A tombstone: the data key was deleted by `privacy erase`",
            key=f"key:{_KID}",
            value=None,
        ),
        RecordExample(
            name="erased-marker",
            summary="The subject was erased: new data about it is written as erased",
            key=f"erased:{_SUBJECT}",
            value={
                "type": "erased",
                "subject": _SUBJECT,
                "erased_at": "2026-04-02T08:00:00Z",
                "audit_id": "0c7d2e9a-4b1f-4e63-9a58-2d1c3b4a5f60",
            },
        ),
    ),
    "dastra.privacy-audit.v1": (
        RecordExample(
            name="erased",
            summary="The requester of rights request 4521 was erased from the bus",
            key="0c7d2e9a-4b1f-4e63-9a58-2d1c3b4a5f60",
            value={
                "audit_id": "0c7d2e9a-4b1f-4e63-9a58-2d1c3b4a5f60",
                "at": "2026-04-02T08:00:00Z",
                "by": "dpo-team",
                "trigger": "manual",
                "request": {
                    "kind": "rights-request",
                    "subject": _SUBJECT,
                    "workspace_id": 101,
                    "rights_request_id": 4521,
                },
                "subjects": [_EMAIL_SUBJECT, _SUBJECT],
                "key_ids": [_KID],
                "erased_markers": 1,
                "tombstones": {"dastra.privacy-keys.v1": 2},
                "unreadable_records": {
                    "dastra.rights-requests.v1": 3,
                    "dastra.tasks.v1": 2,
                    "dastra.command-results.v1": 1,
                },
            },
            headers={
                "ce_specversion": "1.0",
                "ce_id": "0c7d2e9a-4b1f-4e63-9a58-2d1c3b4a5f60",
                "ce_source": "dastra-kafka://privacy",
                "ce_type": "eu.dastra.privacy.erased",
                "ce_time": "2026-04-02T08:00:00Z",
                "ce_subject": _SUBJECT,
                "content-type": "application/json",
            },
        ),
    ),
    "dastra.lag-window.v1": (
        RecordExample(
            name="window",
            summary="Recent samples of the agents' group on one command topic",
            key='["window", "dastra-agents", "dastra.commands.create-task.v1"]',
            value={
                "v": 1,
                "kind": "window",
                "group": "dastra-agents",
                "topic": "dastra.commands.create-task.v1",
                "samples": {
                    "0": [[1772442000000, 1180, 1184], [1772442030000, 1184, 1184]],
                    "1": [[1772442000000, 2040, 2051], [1772442030000, 2051, 2051]],
                },
            },
        ),
        RecordExample(
            name="status",
            summary="The hooks dispatcher's group has been stalled since this time",
            key='["status", "dastra-hooks"]',
            value={
                "v": 1,
                "kind": "status",
                "group": "dastra-hooks",
                "status": "STALL",
                "since": 1772442030.5,
            },
        ),
    ),
}
