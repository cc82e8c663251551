# The dastra-kafka services (one image, one CLI verb per container; see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md requirements.lock topics.yaml ./
COPY docs/topics.md ./docs/topics.md
COPY dastra_kafka ./dastra_kafka
COPY bus ./bus
COPY dastra ./dastra
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
COPY recipes ./recipes
# A plain install at the locked versions (requirements.lock, the runtime part of it): the wheel
# carries topics.yaml, recipes/, schemas/ and docs/topics.md (bus/shipped.py finds them), so the
# source is not kept. Mount your own catalogue and point SERVICE_TOPICS_FILE at it to replace it.
RUN pip install --no-cache-dir --constraint requirements.lock . \
    && cd / && rm -rf /src && useradd --system --uid 10001 dastra
WORKDIR /app
USER dastra
# JSON log lines on stderr (bus/logs.py), one object per line, for the log collector.
ENV SERVICE_HOST=0.0.0.0 \
    SERVICE_LOG_JSON=true
CMD ["dastra-kafka", "--help"]
