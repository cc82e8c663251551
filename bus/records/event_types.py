"""The CloudEvents types (`ce_type`) each catalogue topic with fixed types carries.

EVENT_TYPES[TASKS]   # ("eu.dastra.task.created", "eu.dastra.task.updated")
"""

from __future__ import annotations

from collections.abc import Mapping

from bus.records.commands import RESULT_FAILED, RESULT_SUCCEEDED
from bus.records.privacy_audit import AUDIT_EVENT_TYPE
from bus.topics import COMMAND_RESULTS, PRIVACY_AUDIT, RIGHTS_REQUESTS, TASKS

__all__ = ["EVENT_TYPES"]

EVENT_TYPES: Mapping[str, tuple[str, ...]] = {
    RIGHTS_REQUESTS: ("eu.dastra.rights_request.created", "eu.dastra.rights_request.updated"),
    TASKS: ("eu.dastra.task.created", "eu.dastra.task.updated"),
    COMMAND_RESULTS: (RESULT_SUCCEEDED, RESULT_FAILED),
    PRIVACY_AUDIT: (AUDIT_EVENT_TYPE,),
}
