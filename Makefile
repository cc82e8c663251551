# The two commands of the README. Each does all of its set-up on a fresh machine:
# a virtual environment in .venv, the package with its test extras, Apache Kafka's jars.
#   make run    the demo pipeline on a local broker and the Dastra sandbox
#   make test   lint, type checks and every test but the long `slow` variants, on a real broker
#   make test-all   the same with the `slow` variants (more kills, more records)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# The page test drives a real headless browser: Debian's chromium, installed when missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The alert-rule tests run promtool (`promtool check rules`, `promtool test rules`): Debian's
# prometheus package, installed when missing.
PROMTOOL := /usr/bin/promtool

# The AsyncAPI test tools (the official AsyncAPI JSON Schemas and the parser that
# `asyncapi validate` runs), pinned in tools/asyncapi/package-lock.json, installed when missing.
ASYNCAPI_TOOLS := tools/asyncapi/node_modules/.package-lock.json
# Clients the project does not use itself, for the foreign-client tests (tests/foreign): KafkaJS
# and the CloudEvents JS SDK, pinned in tools/foreign-clients/package-lock.json.
FOREIGN_CLIENTS := tools/foreign-clients/node_modules/.package-lock.json

# The Compose Specification's JSON Schema, to validate docker-compose.yml (and its monitoring
# profile) where no Docker engine runs, pinned in tools/compose-spec/package-lock.json.
COMPOSE_SPEC := tools/compose-spec/node_modules/.package-lock.json

# The generated-types test tools (quicktype and TypeScript's tsc), pinned in
# tools/typegen/package-lock.json, installed when missing.
TYPEGEN_TOOLS := tools/typegen/node_modules/.package-lock.json

.PHONY: install jars chromium promtool compose-spec asyncapi-tools foreign-clients typegen-tools lint schemas-check test test-all test-kafka-3.9 run bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

jars: install
	$(BIN)/dastra-kafka broker --fetch-only

chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

promtool:
	@test -x $(PROMTOOL) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		prometheus; }

$(ASYNCAPI_TOOLS): tools/asyncapi/package-lock.json
	cd tools/asyncapi && npm ci --no-audit --no-fund --silent
	touch $(ASYNCAPI_TOOLS)

asyncapi-tools: $(ASYNCAPI_TOOLS)

$(FOREIGN_CLIENTS): tools/foreign-clients/package-lock.json
	cd tools/foreign-clients && npm ci --no-audit --no-fund --silent
	touch $(FOREIGN_CLIENTS)

foreign-clients: $(FOREIGN_CLIENTS)

$(COMPOSE_SPEC): tools/compose-spec/package-lock.json
	cd tools/compose-spec && npm ci --no-audit --no-fund --silent
	touch $(COMPOSE_SPEC)

compose-spec: $(COMPOSE_SPEC)

$(TYPEGEN_TOOLS): tools/typegen/package-lock.json
	cd tools/typegen && npm ci --no-audit --no-fund --silent
	touch $(TYPEGEN_TOOLS)

typegen-tools: $(TYPEGEN_TOOLS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The contract files (schemas/, docs/topics.md) must match the code and break no consumer.
schemas-check: install
	$(BIN)/dastra-kafka schemas check

# Every guarantee is tested by `make test`; a test marked `slow` is a longer variant of one that
# `make test` runs too (e.g. 12 SIGKILLs of the poller instead of 4).
test: jars chromium promtool compose-spec asyncapi-tools foreign-clients typegen-tools lint schemas-check
	$(BIN)/pytest -m "not slow"

# The guarantee tests (transactions, the poller's exactly-once, the agents' crash safety, lag)
# on an older cluster: Kafka 3.9 from Maven Central, as many customers still run it.
OLDER_KAFKA := 3.9.2
GUARANTEE_TESTS := tests/bus/test_roundtrip.py tests/producers/test_poller.py \
	tests/consumers/test_agents.py tests/consumers/test_agents_crash.py tests/consumers/lag

test-all: jars chromium promtool compose-spec asyncapi-tools foreign-clients typegen-tools lint schemas-check
	$(BIN)/pytest
	$(MAKE) test-kafka-3.9

test-kafka-3.9: jars
	$(BIN)/dastra-kafka broker --fetch-only --kafka-version $(OLDER_KAFKA)
	KAFKA_TEST_VERSION=$(OLDER_KAFKA) $(BIN)/pytest -m "not slow" $(GUARANTEE_TESTS)

run: jars
	$(BIN)/dastra-kafka demo

# Every benchmark at its full size (about 20 minutes; figures mean most on an idle machine):
# bench/results.json and BENCHMARKS.md. `make bench BENCH_ARGS=--smoke` for the smallest sizes.
bench: jars
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tools/asyncapi/node_modules \
		tools/foreign-clients/node_modules tools/typegen/node_modules tools/compose-spec/node_modules
