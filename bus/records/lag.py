"""The lag monitor's wire records: its evaluation window and group statuses
(dastra.lag-window.v1, compacted), and the `Status` they carry.

    record = StatusRecord(v=1, kind="status", group="g", status=Status.STOP, since=0.0)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LagWindowKey", "LagWindowRecord", "Status", "StatusRecord", "WindowRecord"]


class Status(StrEnum):
    """A partition's or group's health; `code` orders them by severity."""

    OK = "OK"
    WARN = "WARN"
    REWIND = "REWIND"
    STALL = "STALL"
    STOP = "STOP"
    NOTFOUND = "NOTFOUND"

    @property
    def code(self) -> int:
        return _CODES[self]


_CODES = {
    Status.OK: 0,
    Status.WARN: 1,
    Status.REWIND: 2,
    Status.STALL: 3,
    Status.STOP: 4,
    Status.NOTFOUND: 5,
}


class WindowRecord(BaseModel):
    """The samples of one group and topic (key `["window", group, topic]`)."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = Field(description="Record format version")
    kind: Literal["window"]
    group: str = Field(description="Consumer group")
    topic: str
    samples: dict[
        Annotated[str, Field(pattern=r"^[0-9]+$")],
        list[Annotated[list[int], Field(min_length=3, max_length=3)]],
    ] = Field(
        description="Per partition number, oldest first: [at (Unix ms), committed offset, "
        "log end offset]"
    )


class StatusRecord(BaseModel):
    """A group's last status and since when (key `["status", group]`)."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = Field(description="Record format version")
    kind: Literal["status"]
    group: str = Field(description="Consumer group")
    status: Status
    since: float = Field(description="Unix time (s) the group entered this status")


LagWindowRecord = Annotated[WindowRecord | StatusRecord, Field(discriminator="kind")]


# The key of a record: the JSON text of ["window", group, topic] or ["status", group].
LagWindowKey = Annotated[str, Field(pattern=r'^\["(window|status)",')]
