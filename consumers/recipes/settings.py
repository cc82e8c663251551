"""The recipes' settings (`RECIPES_*`), and the values recipes read as `settings.*`.

recipes = RecipesSettings(enable=["new-request-dpo-task"])
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode

from bus.settings import comma_separated, part_config
from bus.topics import NOTIFICATIONS

__all__ = ["RecipesSettings"]


_CommaList = Annotated[list[str], NoDecode, BeforeValidator(comma_separated)]


class RecipesSettings(BaseSettings):
    """The recipes the worker runs (`RECIPES_*`), and the values recipes read as `settings.*`."""

    model_config = part_config("RECIPES_")

    # Recipes switched on (or off) whatever their file says: RECIPES_ENABLE=name1,name2.
    enable: _CommaList = Field(default_factory=list)
    disable: _CommaList = Field(default_factory=list)
    # Directories (or files) of your own recipes, after the shipped ones; a recipe of yours with
    # the name of a shipped one replaces it. RECIPES_DIRS=/etc/dastra-kafka/recipes,./more
    dirs: _CommaList = Field(default_factory=list)
    # Load the recipes shipped in recipes/ (all disabled unless enabled above).
    shipped: bool = True
    # Run the recipes made in the studio (dastra.recipes.v1), followed live: a saved version
    # replaces the running one within seconds, without a restart.
    studio: bool = False
    # --- read by recipes as settings.<name> ---
    # The DPO's Dastra user id: tasks for the DPO are assigned to them (unassigned when unset).
    dpo_user_id: int | None = Field(default=None, ge=1)
    # The systems an erasure must reach: one task per system.
    erasure_systems: _CommaList = Field(
        default_factory=lambda: ["CRM", "Billing", "E-mail marketing", "Customer support"]
    )
    notifications_topic: str = NOTIFICATIONS
    # Your CRM's topic for messages about rights requests (not in topics.yaml: yours).
    crm_topic: str = "crm.dastra-updates"
    # The processing a newly onboarded vendor is linked to when its event names none.
    vendor_processing_id: str | None = None
    # A rights request this close to its deadline (days) and not closed gets escalated.
    deadline_warning_days: int = Field(default=5, ge=0)
    # Free values for your own recipes: RECIPES_VARS='{"team": "privacy"}' -> settings.vars.team
    vars: dict[str, Any] = Field(default_factory=dict)
    # --- how the worker runs them ---
    # How often periodic recipes (schedule) look at Dastra.
    schedule_interval_s: float = Field(default=3600.0, gt=0)
    # How long a step waits for its command's result before the run fails.
    step_timeout_s: float = Field(default=600.0, gt=0)
    # Trigger records taken from Kafka and not finished; the recipe agents stop reading beyond.
    max_in_flight: int = Field(default=500, ge=1)
    # How long a worker may take to read dastra.recipe-runs.v1 to its end after an assignment.
    state_timeout_s: float = Field(default=120.0, gt=0)

    def expression_settings(self) -> dict[str, Any]:
        """What recipes see as `settings` in their expressions."""
        return {
            "dpo_user_id": self.dpo_user_id,
            "erasure_systems": list(self.erasure_systems),
            "notifications_topic": self.notifications_topic,
            "crm_topic": self.crm_topic,
            "vendor_processing_id": self.vendor_processing_id,
            "deadline_warning_days": self.deadline_warning_days,
            "vars": dict(self.vars),
        }
