"""The one Faust app of the command agents, built by a factory from settings.

Consumes the six `dastra.commands.<action>.v1` topics (one thin agent per action, see
`consumers/<action>.py`) and dastra.command-results.v1 (the dedupe index). Produces
dastra.command-results.v1 and dastra.dead-letter.v1 through the shared `Dispatcher`. With
enabled recipes (RECIPES_ENABLE), also runs them (`consumers/recipes/runner.py`): their
trigger topics are consumed by this app too; with RECIPES_STUDIO=true, also the recipes made in
the studio (dastra.recipes.v1, followed live; `consumers/recipes/studio.py`). Serves, on the
Faust web server (WORKER_WEB_HOST:WORKER_WEB_PORT, loopback by default):

    GET /metrics   Prometheus metrics of the agents (per action: succeeded, failed, retried,
                   dead-lettered, duplicates; latency and duration histograms; in flight), of
                   the recipes (runs, steps, dead letters, periodic checks, schedule leader
                   `dastra_recipe_schedule_leader`), of the Dastra
                   client (`dastra_client_*`), Faust's own sensors (`faust_*`: messages in,
                   sends, commits, rebalances, offsets per partition) and the process
    GET /ready     200 once partitions are assigned and the result index (and the recipes'
                   run state) is caught up, else 503; with recipes, `recipeScheduleLeader`
                   says whether this worker runs the periodic ones

Nothing happens at import time: `create_app(settings)` builds the app, and starting it (a
`faust.Worker`: `run(settings)`, as `dastra-kafka worker` does) opens the Dastra client, the
producer and the index; stopping it drains the commands in flight, commits, then closes them.

    raise SystemExit(run(load_settings()))   # the worker's main loop, until SIGTERM or Ctrl-C
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import structlog
from faust.auth import OAuthCredentials
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus.settings import KafkaSettings
from bus.topics import RECORD_MAX_BYTES, command_topic
from consumers import (
    create_actor,
    create_rights_request,
    create_task,
    find_or_create_actor,
    link_actor_to_processing,
    search_actors,
)
from consumers.dispatcher import Dispatcher
from consumers.recipes.language import Recipe, runnable_recipes
from consumers.recipes.runner import RecipeRunner
from consumers.settings import WorkerConfig

__all__ = ["AgentsApp", "create_app", "run"]

_log = structlog.get_logger(__name__)

# aiohttp sets the charset itself and refuses one inside content_type.
_CONTENT_TYPE = "; ".join(
    part for part in CONTENT_TYPE_LATEST.split("; ") if not part.startswith("charset=")
)

# The six actions: each module is a SPEC and its handle(); this app gives each an agent.
_SPECS = {
    spec.action: spec
    for spec in (
        create_task.SPEC,
        create_actor.SPEC,
        create_rights_request.SPEC,
        link_actor_to_processing.SPEC,
        search_actors.SPEC,
        find_or_create_actor.SPEC,
    )
}


class AgentsApp(faust.App):
    """A Faust app whose lifecycle also starts, drains and closes its dispatcher (and its
    recipe runner, when recipes are enabled)."""

    dispatcher: Dispatcher
    recipes: RecipeRunner | None = None

    async def on_first_start(self) -> None:
        await asyncio.to_thread(Path(self.conf.datadir).mkdir, parents=True, exist_ok=True)
        await super().on_first_start()

    async def on_start(self) -> None:
        await super().on_start()
        await self.dispatcher.start()
        if self.recipes is not None:
            await self.recipes.start(
                self.dispatcher.index, self.dispatcher.dastra, self.dispatcher.keys
            )

    async def on_stop(self) -> None:
        try:
            if self.recipes is not None:
                await self.recipes.drain()
            await self.dispatcher.drain()
            await self._commit_acked()
        finally:
            try:
                await super().on_stop()
            finally:
                try:
                    if self.recipes is not None:
                        await self.recipes.close()
                finally:
                    await self.dispatcher.close()

    async def _commit_acked(self) -> None:
        # Faust's own final commit happens only with stream_wait_empty, which we turn off.
        try:
            assignment = self.consumer.assignment()
        except Exception:  # ConsumerNotStarted: nothing consumed, nothing to commit
            return
        if assignment:
            await self.consumer.commit()


def _broker_urls(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",") if server]


def _credentials(kafka: KafkaSettings) -> Any:
    context = kafka.ssl_context()
    if kafka.uses_oauthbearer:
        # OIDC client credentials or Amazon MSK IAM: the same token provider as aiokafka's.
        return OAuthCredentials(oauth_cb=kafka.token_provider(), ssl_context=context)
    if kafka.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: WorkerConfig, recipes: Sequence[Recipe] | None = None) -> AgentsApp:
    """The Faust app of the agents selected by WORKER_ACTIONS (default: all six), and of the
    enabled `recipes` (default: those the settings enable; `RecipeError` when one is invalid).

    Its id, which is also its consumer group, is KAFKA_TOPIC_PREFIX + WORKER_APP_ID; it declares
    no internal topic (no tables, no leader topic: the recipes' schedule leader is the member
    holding partition 0 of the first command topic it consumes).
    """
    if recipes is None:
        recipes = runnable_recipes(settings)
    kafka, worker = settings.kafka, settings.worker
    app_id = kafka.topic(worker.app_id)
    data_dir = worker.data_dir or Path(tempfile.gettempdir()) / "dastra-kafka-agents" / app_id
    app = AgentsApp(
        app_id,
        broker=_broker_urls(kafka),
        broker_credentials=_credentials(kafka),
        broker_client_id=kafka.client_id,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=worker.heartbeat_interval_s,
        broker_commit_interval=worker.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        # Per partition; a command record may take up to its topic's max.message.bytes.
        consumer_max_fetch_size=RECORD_MAX_BYTES,
        processing_guarantee="at_least_once",
        stream_wait_empty=False,
        topic_disable_leader=True,
        topic_replication_factor=kafka.replication_factor or 1,
        datadir=str(data_dir),
        web_enabled=True,
        web_bind=worker.web_host,
        web_host=worker.web_host,
        web_port=worker.web_port,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        worker_redirect_stdouts=False,
    )
    dispatcher = Dispatcher(
        kafka, worker, settings.dastra, on_crash=app.crash, privacy=settings.privacy
    )
    app.dispatcher = dispatcher
    # Faust's sensors, in the worker's registry (Faust's own helper would use the global one).
    app.monitor = PrometheusMonitor(
        metrics=FaustMetrics.create(dispatcher.metrics.registry, "faust")
    )
    for action in worker.selected_actions():
        dispatcher.attach(app, _SPECS[action])
    runner: RecipeRunner | None = None
    if recipes or settings.recipes.studio:
        # The schedule leader holds partition 0 of the first command topic this worker consumes
        # (create-task's by default): a topic of the group, so no leader topic of Faust's.
        leader_topic = kafka.topic(command_topic(worker.selected_actions()[0]))
        runner = RecipeRunner(
            settings,
            recipes,
            leader_topic=leader_topic,
            on_crash=app.crash,
            registry=dispatcher.metrics.registry,
        )
        runner.attach(app)
    app.recipes = runner

    async def revoked(_sender: Any, *args: Any, **_kwargs: Any) -> None:
        if runner is not None:
            await runner.on_partitions_revoked(set(args[0]))
        await dispatcher.on_partitions_revoked(set(args[0]))

    async def assigned(_sender: Any, *args: Any, **_kwargs: Any) -> None:
        await dispatcher.on_partitions_assigned(set(args[0]))
        if runner is not None:
            await runner.on_partitions_assigned(set(args[0]))

    # mode's handler type (SignalHandlerT) does not accept a coroutine function as written.
    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]

    @app.page("/metrics")
    async def metrics(web: Any, _request: Any) -> Any:
        return web.bytes(generate_latest(dispatcher.metrics.registry), content_type=_CONTENT_TYPE)

    @app.page("/ready")
    async def ready(web: Any, _request: Any) -> Any:
        is_ready = dispatcher.ready and (runner is None or runner.ready)
        body: dict[str, Any] = {
            "ready": is_ready,
            "inFlight": dispatcher.in_flight,
            "partitions": [f"{topic}/{partition}" for topic, partition in dispatcher.assigned],
        }
        if runner is not None:
            body["recipes"] = [recipe.name for recipe in runner.recipes]
            body["recipeTriggersInFlight"] = runner.in_flight
            body["recipeScheduleLeader"] = runner.leader
        return web.json(body, status=200 if is_ready else 503)

    return app


def run(settings: WorkerConfig, recipes: Sequence[Recipe] | None = None) -> int:
    """Build the worker's app and run it until SIGTERM or Ctrl-C; the process's exit status
    (1 when Faust stopped it with a message)."""
    app = create_app(settings, recipes)
    worker = faust.Worker(
        app,
        loglevel=settings.service.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,  # keep the structlog set-up of the entry point
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
