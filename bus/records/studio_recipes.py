"""The recipes made in the studio: one version record per save, on two topics.

Consumes nothing. Defines the value of `dastra.recipes.v1` (compacted, key = the recipe's name:
the newest version of each studio recipe, or a tombstone once deleted) and of
`dastra.recipe-changes.v1` (the same record, never compacted: the audit trail of every change,
a deletion included). The JSON Schemas under schemas/ are generated from these models.

    version = StudioRecipeVersion(name="web-form", version=2, change="saved", recipe={...},
                                  saved_by="tok_0a1b2c3d4e5f", saved_at=now)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["STUDIO_NAME_PATTERN", "StudioChange", "StudioRecipeVersion"]

STUDIO_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,79}$"

StudioChange = Literal["saved", "imported", "enabled", "disabled", "deleted"]


class StudioRecipeVersion(BaseModel):
    """One version of a studio recipe (value of dastra.recipes.v1 and dastra.recipe-changes.v1,
    key = `name`). `recipe` is the recipe document exactly as a recipe YAML file holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=STUDIO_NAME_PATTERN, description="The recipe's name (the key)")
    version: int = Field(ge=1, description="1 for the first save, then one more per change")
    change: StudioChange = Field(
        description="What made this version: a save, an import, enable, disable, or (on "
        "dastra.recipe-changes.v1 only; the compacted topic gets a tombstone) a deletion"
    )
    recipe: dict[str, Any] | None = Field(
        description="The recipe document (name, description, enabled, trigger or schedule, "
        "once_per, steps, example), as in a recipe YAML file; null for a deletion"
    )
    saved_by: str = Field(
        min_length=1,
        description="Who made the change: the id of the studio token (`tok_` and 12 hex "
        "digits), never the token itself",
    )
    saved_at: datetime

    @model_validator(mode="after")
    def _document(self) -> StudioRecipeVersion:
        if (self.recipe is None) != (self.change == "deleted"):
            raise ValueError("a deletion carries no recipe; every other change carries one")
        if self.recipe is not None and self.recipe.get("name") != self.name:
            raise ValueError("the recipe's name must be the record's name")
        return self

    @property
    def enabled(self) -> bool:
        """Whether the document says enabled (the worker may still refuse the version)."""
        return bool(self.recipe and self.recipe.get("enabled") is True)
