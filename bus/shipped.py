"""Where the data files shipped with the code are: `topics.yaml`, `recipes/`, `schemas/` and
`docs/topics.md`. Consumes nothing; produces their directory, found in one place for every
reader: the copy an installed wheel carries inside this package (`bus/_shipped/`, put there by
pyproject.toml's `[tool.hatch.build.targets.wheel.force-include]`), else the repository root
next to the packages (a checkout, an editable install)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["shipped_root"]

_PACKAGED = "_shipped"
_CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def shipped_root() -> Path:
    """The directory holding `topics.yaml`, `recipes/`, `schemas/` and `docs/topics.md`.

    ```python
    catalogue = load_catalogue(shipped_root() / "topics.yaml")
    ```
    """
    packaged = files(__package__ or "bus").joinpath(_PACKAGED)
    # A wheel is installed unzipped: its resources are plain files with a real path, which
    # callers keep (error messages, `schemas check`'s root, recipe file names).
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return _CHECKOUT_ROOT
