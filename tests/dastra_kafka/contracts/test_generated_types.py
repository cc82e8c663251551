"""The README's generated-types promise, kept: from every schema in schemas/, datamodel-codegen
makes Python models that mypy --strict accepts and that read every example record of the
contracts, and quicktype makes TypeScript types that tsc --strict accepts. One generator run per
language for all the schemas together (tools/typegen holds quicktype and TypeScript, pinned)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from bus.topics import TopicCatalogue
from dastra_kafka.contracts.registry import CONTRACTS, TOPIC_CONTRACTS
from dastra_kafka.contracts.schemagen import SCHEMAS_DIR
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.timeout(300)

SCHEMA_FILES = sorted((PROJECT_ROOT / SCHEMAS_DIR).glob("*.schema.json"))
TYPEGEN_BIN = PROJECT_ROOT / "tools" / "typegen" / "node_modules" / ".bin"
PACKAGE = "dastra_contract_models"

# The options the README gives consumers: pydantic v2 models, constraints as Field(...) in
# Annotated (type checkers cannot read `constr(...)`), enum members as defaults.
DATAMODEL_CODEGEN_OPTIONS = [
    "--input-file-type",
    "jsonschema",
    "--output-model-type",
    "pydantic_v2.BaseModel",
    "--target-python-version",
    "3.11",
    "--use-annotated",
    "--field-constraints",
    "--set-default-enum-member",
    "--formatters",
    "builtin",
    "--disable-timestamp",
]


def _run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, f"{' '.join(command[:2])}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _schemas_copy(target: Path) -> Path:
    """Only the schema files (schemas/ also holds asyncapi.yaml and a README)."""
    target.mkdir()
    for path in SCHEMA_FILES:
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture(scope="module")
def python_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("python-models")
    codegen = Path(sys.executable).parent / "datamodel-codegen"
    inputs = _schemas_copy(work / "schemas")
    _run(
        [
            str(codegen),
            "--input",
            str(inputs),
            "--output",
            str(work / PACKAGE),
            *DATAMODEL_CODEGEN_OPTIONS,
        ],
        work,
    )
    sys.path.insert(0, str(work))
    try:
        yield work
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_every_schema_gets_a_python_module(python_models: Path) -> None:
    modules = {path.stem for path in (python_models / PACKAGE).glob("*_schema.py")}
    assert modules == {
        _module_name(path.name.removesuffix(".schema.json")) for path in SCHEMA_FILES
    }


def test_the_python_models_pass_mypy_strict(python_models: Path) -> None:
    config = python_models / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nplugins = pydantic.mypy\n")
    _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(python_models / ".mypy_cache"),
            PACKAGE,
        ],
        python_models,
    )


def _module_name(schema: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", schema.lower()) + "_schema"


def _model(module: ModuleType, schema: str) -> type[BaseModel]:
    """The top-level model: datamodel-codegen names it after the schema's title, in camel case
    ("REST hook subscription": `RestHookSubscription`)."""
    name = re.sub(r"[^a-z0-9]", "", CONTRACTS[schema].title.lower())
    found = [
        value
        for key, value in vars(module).items()
        if key.lower() == name and isinstance(value, type) and issubclass(value, BaseModel)
    ]
    assert len(found) == 1, (schema, name)
    return found[0]


def _examples() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    for topic, contract in TOPIC_CONTRACTS.items():
        for example in contract.examples:
            cases.append((topic, f"{example.name}:key", example.key))
            cases.append((topic, f"{example.name}:value", example.value))
    return [case for case in cases if case[2] is not None]  # no key, or a tombstone


@pytest.mark.parametrize(("topic", "part", "data"), _examples())
def test_every_example_reads_through_the_generated_model(
    python_models: Path, catalogue: TopicCatalogue, topic: str, part: str, data: Any
) -> None:
    spec = catalogue[topic]
    schema = spec.key_schema if part.endswith(":key") else spec.value_schema
    module = importlib.import_module(f"{PACKAGE}.{_module_name(schema)}")
    model = _model(module, schema)
    parsed = model.model_validate(data)
    # What the generated model holds reads again (aliases such as `$enc` included; python mode,
    # because JSON mode masks the `format: password` secret of a subscription, as it should).
    assert model.model_validate(parsed.model_dump(by_alias=True)) == parsed


def test_a_record_off_the_contract_is_refused_by_the_generated_model(python_models: Path) -> None:
    module = importlib.import_module(f"{PACKAGE}.{_module_name('command-result')}")
    model = _model(module, "command-result")
    example = next(e for e in TOPIC_CONTRACTS["dastra.command-results.v1"].examples if e.value)
    assert isinstance(example.value, dict)
    with pytest.raises(ValueError, match="status"):
        model.model_validate({**example.value, "status": "maybe"})


# --- TypeScript ------------------------------------------------------------------------------


def _typegen(tool: str) -> str:
    path = TYPEGEN_BIN / tool
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make typegen-tools`")
    return str(path)


@pytest.fixture(scope="module")
def typescript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """contracts.ts: quicktype's types (and runtime checks) of every schema, in one run."""
    work = tmp_path_factory.mktemp("typescript")
    inputs = _schemas_copy(work / "schemas")
    output = work / "contracts.ts"
    _run(
        [
            _typegen("quicktype"),
            "--src-lang",
            "schema",
            "--lang",
            "typescript",
            "--out",
            str(output),
            *sorted(str(path) for path in inputs.iterdir()),
        ],
        work,
    )
    return output


def test_typescript_types_of_every_schema_pass_tsc_strict(typescript: Path) -> None:
    text = typescript.read_text()
    for title in ("Task", "RightsRequest", "CommandCreateTask", "CommandResult", "Notification"):
        assert f"export interface {title} {{" in text, title
    tsc = [_typegen("tsc"), "--strict", "--target", "es2022"]
    _run([*tsc, "--noEmit", "--module", "nodenext", str(typescript)], typescript.parent)


def test_every_example_reads_through_the_typescript_runtime_checks(
    typescript: Path, catalogue: TopicCatalogue
) -> None:
    work = typescript.parent
    tsc = [_typegen("tsc"), "--strict", "--target", "es2022", "--module", "commonjs"]
    _run([*tsc, "--outDir", str(work / "js"), str(typescript)], work)
    # quicktype writes one Convert.to<Type> per input, in input order (the sorted files).
    methods = re.findall(r"public static (to\w+)\(json: string\)", typescript.read_text())
    names = [path.name.removesuffix(".schema.json") for path in SCHEMA_FILES]
    assert len(methods) == len(names)
    method_of = dict(zip(names, methods, strict=True))
    examples = []
    for topic, part, data in _examples():
        spec = catalogue[topic]
        schema = spec.key_schema if part.endswith(":key") else spec.value_schema
        examples.append({"id": f"{topic} {part}", "method": method_of[schema], "json": data})
    # And one the checks must refuse, so a check that accepts anything fails this test.
    examples.append({"id": "off-contract", "method": method_of["command-result"], "json": {}})
    for example in examples:
        example["json"] = json.dumps(example["json"])
    (work / "examples.json").write_text(json.dumps(examples))
    script = PROJECT_ROOT / "tools" / "typegen" / "read-examples.cjs"
    report = json.loads(
        _run(["node", str(script), str(work / "js" / "contracts.js"), "examples.json"], work)
    )
    refused = report.pop("off-contract")
    assert refused is not None and "action" in refused
    assert {key: error for key, error in report.items() if error is not None} == {}
    assert len(report) == len(examples) - 1
