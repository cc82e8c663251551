"""The package as a user installs it. requirements.lock covers pyproject.toml's ranges; and
(marked `wheel`) the wheel built from this checkout, installed without -e in a fresh virtual
environment at the locked versions, runs `topics check`, `recipes validate` and `schemas check`
from a directory outside the checkout, with the data files the wheel carries (bus/shipped.py).
The wheel tests reach PyPI through pip (its cache after the first run): about 35 s here, most
of it building the wheel and installing the runtime set into the venv (once per module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
# What the code reads as data (bus/shipped.py), as the wheel must carry it.
SHIPPED = ("topics.yaml", "docs/topics.md", "recipes", "schemas")


def _locked() -> dict[str, str]:
    versions = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin"
            versions[canonicalize_name(name)] = version.strip()
    return versions


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    locked = _locked()
    for text in declared:
        requirement = Requirement(text)
        assert requirement.specifier, f"{text}: give it a version range"
        assert all(spec.operator != "==" for spec in requirement.specifier), (
            f"{text}: a range in pyproject.toml, the exact version in requirements.lock"
        )
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{text} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock has {name}=={locked[name]}, outside {text}: run `make lock`"
        )


@dataclass(frozen=True)
class Installed:
    """A fresh venv with the wheel installed, and a working directory outside the checkout."""

    venv: Path
    cwd: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "dastra-kafka"), *args],
            cwd=self.cwd,
            env={**_outside_env(), "COLUMNS": "200", **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _outside_env() -> dict[str, str]:
    # The tests run with PYTHONPATH at the checkout: the venv must import the wheel, not it.
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    return {name: value for name, value in os.environ.items() if name not in dropped}


def _pip(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(base / "dist"), str(ROOT))
    (wheel,) = (base / "dist").glob("dastra_kafka-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for item in SHIPPED:
        in_wheel = f"bus/_shipped/{item}"
        assert in_wheel in names or any(n.startswith(f"{in_wheel}/") for n in names), item
    # No pip in the venv: this interpreter's pip installs into it (`pip --python`).
    venv.create(base / "venv", with_pip=False, system_site_packages=False)
    python = str(base / "venv" / "bin" / "python")
    _pip("--python", python, "install", "--quiet", "--constraint", str(LOCK), str(wheel))
    cwd = base / "elsewhere"
    cwd.mkdir()
    yield Installed(base / "venv", cwd)


@pytest.mark.wheel
def test_the_venv_imports_the_wheel_at_the_locked_versions(installed: Installed) -> None:
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import bus; print(bus.__file__)"],
        cwd=installed.cwd,
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.venv), where.stdout
    python = str(installed.venv / "bin" / "python")
    frozen = _pip("--python", python, "freeze", "--exclude", "dastra-kafka")
    locked = _locked()
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        assert locked.get(canonicalize_name(name)) == version, (
            f"{line} installed, requirements.lock has {locked.get(canonicalize_name(name))}"
        )


@pytest.mark.wheel
def test_recipes_validate_reads_the_recipes_the_wheel_ships(installed: Installed) -> None:
    validated = installed.run("recipes", "validate", "--json")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    shipped = sorted((ROOT / "recipes").glob("*.yaml"))
    assert len(json.loads(validated.stdout)["recipes"]) == len(shipped)
    listed = installed.run("recipes", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    files = [Path(recipe["file"]) for recipe in json.loads(listed.stdout)["recipes"]]
    assert sorted(file.name for file in files) == [file.name for file in shipped]
    assert all(file.is_relative_to(installed.venv) for file in files), files


@pytest.mark.wheel
def test_schemas_check_finds_the_contract_files_the_wheel_ships(installed: Installed) -> None:
    checked = installed.run("schemas", "check")
    # Without the files in the wheel, every one of them is "missing" (exit 1).
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.wheel
def test_topics_check_compares_the_cluster_with_the_shipped_catalogue(
    installed: Installed, kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }
    checked = installed.run("topics", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the cluster matches topics.yaml" in checked.stdout
