"""The recipes' settings (`RECIPES_*`), and the values recipes read as `settings.*`; a recipe
may set its own values of those in its `settings:` block (`for_recipe`).

recipes = RecipesSettings(enable=["new-request-dpo-task"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode

from bus.settings import comma_separated, part_config
from bus.topics import NOTIFICATIONS

__all__ = ["EXPRESSION_SETTINGS", "RecipesSettings"]

# The settings recipes read as `settings.<name>`, and may set in their own `settings:` block.
EXPRESSION_SETTINGS = (
    "dpo_user_id",
    "erasure_systems",
    "notifications_topic",
    "crm_topic",
    "vendor_processing_id",
    "deadline_warning_days",
    "vars",
)


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
    # --- read by recipes as settings.<name> (the descriptions are the studio's help) ---
    dpo_user_id: int | None = Field(
        default=None,
        ge=1,
        description="The DPO's Dastra user id: tasks for the DPO are assigned to them "
        "(unassigned when unset).",
    )
    erasure_systems: _CommaList = Field(
        default_factory=lambda: ["CRM", "Billing", "E-mail marketing", "Customer support"],
        description="The systems an erasure must reach: one task per system.",
    )
    notifications_topic: str = Field(
        default=NOTIFICATIONS, description="The topic of notifications to people."
    )
    crm_topic: str = Field(
        default="crm.dastra-updates",
        description="Your CRM's topic for messages about rights requests (yours, not in "
        "topics.yaml).",
    )
    vendor_processing_id: str | None = Field(
        default=None,
        description="The processing a newly onboarded vendor is linked to when its event names "
        "none.",
    )
    deadline_warning_days: int = Field(
        default=5,
        ge=0,
        description="A rights request this close to its deadline (days) and not closed gets "
        "escalated.",
    )
    # RECIPES_VARS='{"team": "privacy"}' -> settings.vars.team
    vars: dict[str, Any] = Field(
        default_factory=dict, description="Free values for your own recipes (settings.vars.x)."
    )
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

    def for_recipe(self, own: Mapping[str, Any]) -> RecipesSettings:
        """These settings with a recipe's own values (its `settings:` block, names of
        `EXPRESSION_SETTINGS` only) in place of the RECIPES_* ones, validated as the
        environment's are: pydantic's `ValidationError` names the value at fault.

            RecipesSettings().for_recipe({"crm_topic": "crm.v2"}).crm_topic  # 'crm.v2'
        """
        unknown = sorted(set(own) - set(EXPRESSION_SETTINGS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        # model_validate, not the constructor: the environment is not read again.
        return type(self).model_validate({**self.model_dump(), **own})
