# The dastra-kafka services (one image, one CLI verb per container; see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md topics.yaml ./
COPY dastra_kafka ./dastra_kafka
COPY bus ./bus
COPY dastra ./dastra
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
COPY recipes ./recipes
# Editable: the shipped recipes, topics.yaml and schemas/ are found next to the code, as in a
# checkout (a plain wheel would leave them behind).
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 dastra
USER dastra
ENV SERVICE_HOST=0.0.0.0 SERVICE_TOPICS_FILE=/app/topics.yaml
CMD ["dastra-kafka", "--help"]
