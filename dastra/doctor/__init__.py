"""Dastra's doctor: checks of what the spec leaves open, and the profile the bridge adapts to.

report = await run_checks(dastra, ws)              # dastra-kafka doctor
profile = (await detect(dastra, ws)).profile        # what the poller adapts to at start-up
"""

from dastra.doctor.checks import TRIGGER_QUERIES, Report, run_checks
from dastra.doctor.probes import Detection, Finding, Profile, Status, detect

__all__ = [
    "TRIGGER_QUERIES",
    "Detection",
    "Finding",
    "Profile",
    "Report",
    "Status",
    "detect",
    "run_checks",
]
