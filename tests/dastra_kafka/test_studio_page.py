"""The studio's page in a real browser (Playwright drives Debian's chromium), done as a new user
would, with clicks and typing only, against the studio on the session broker, a real
`dastra-kafka worker` (RECIPES_STUDIO=true) and the sandbox:

- start from nothing and build "a web form submission on `web.privacy-forms` becomes a rights
  request, then an identity-check task attached to it"; see the validation error of a missing
  field and fix it; test it on a pasted sample and check the rendered commands; save and enable
  it; a real event on the topic makes the worker create both items in the sandbox, and the run
  shows in the history as succeeded;
- the recipe the page built and the same recipe written as YAML behave identically;
- a broken expression is shown on its field and never reaches the workers;
- a saved recipe sent once from the Test screen, its failed run shown in the history and retried
  from there without repeating the step that succeeded;
- a template's copy is edited and enabled, and the worker picks it up;
- a copy of request-closed-to-crm shows its message's topic and every field; its CRM topic set in
  the settings panel, it is saved (the YAML export is what the builder showed) and enabled, and
  the worker publishes a closed request's message on that topic;
- the erasure template's copy gets systems of its own in the settings panel (rows added and
  removed), and its test makes one task per system;
- the history shows what each command did: the created item's id, a dead letter's reason;
- a read-only token cannot save, enable or copy;
- the page loads nothing from outside loopback.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from bus.envelope import encode_binary, header_dict, new_event
from bus.reading import read_to_end
from bus.settings import KafkaSettings
from bus.topics import RIGHTS_REQUESTS, TopicCatalogue
from consumers.recipes.language import event_context, load_document, preview_run
from consumers.recipes.settings import RecipesSettings
from dastra.sandbox import SandboxServer
from dastra_kafka.studio.app import create_app
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from tests.consumers.agents_support import RecordProducer, WorkerProcess
from tests.consumers.recipes.studio_support import FORMS, studio_kafka, studio_worker
from tests.kafka_helpers import delete_topics, unique, wait_for
from tests.producers.webhook_support import ServerThread

CHROMIUM = "/usr/bin/chromium"
EDITOR = "studio-page-editor-token-1"
VIEWER = "studio-page-viewer-token-1"
NAME = "web-form-request"
UI_S = 30_000  # milliseconds a page element may take to show (the page answers in far less)
RUN_S = 60.0  # seconds an enabled recipe may take to be picked up and run

# The same recipe, written by hand as a YAML file: what the page must build, field for field.
WRITTEN = """
name: web-form-request
description: A web form submission becomes a rights request, then an identity check
enabled: true
trigger:
  topic: web.privacy-forms
  filter: data.consent
steps:
  - id: request
    command: create-rights-request
    with:
      title: "Web form {{ data.formId }}"
      purposes: [Access]
      email: "{{ data.email }}"
      refId: "web-{{ data.formId }}"
      channel: Form
  - id: task
    command: create-task
    with:
      label: "Check the identity for request {{ steps.request.result.id }}"
      objectType: DataSubject
      objectId: "{{ steps.request.result.id }}"
"""

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium: run `make chromium`"
)
pytestmark = [needs_chromium, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def skafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    with studio_kafka(kafka_bootstrap, catalogue, "page") as kafka:
        yield kafka


@pytest.fixture(scope="module")
def studio_url(skafka: KafkaSettings, catalogue: TopicCatalogue) -> Iterator[str]:
    settings = StudioSettings(tokens=[SecretStr(EDITOR)], read_tokens=[SecretStr(VIEWER)])
    app = create_app(StudioStore(skafka, settings), settings, RecipesSettings(), catalogue)
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture(scope="module")
def worker(
    skafka: KafkaSettings,
    sandbox_server: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    sandbox_server.admin.reset()
    with studio_worker(skafka, sandbox_server, tmp_path_factory.mktemp("page-worker")) as process:
        yield process


# One browser for the module: Playwright's sync API keeps its event loop in this thread while it
# is open, and no asyncio test shares this module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


class _Page:
    """One signed-in page, with the internet cut: any request leaving loopback is aborted and
    recorded, and so are script errors."""

    def __init__(self, browser: Any, url: str, token: str) -> None:
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(f"{url}/studio/")
        self.page.fill("#token", token)
        self.page.click("#login-form button[type=submit]")
        self.page.locator(".card").first.wait_for(timeout=UI_S)

    def _guard(self, route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith("data:") or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort("internetdisconnected")

    def tab(self, name: str) -> None:
        self.page.click(f"nav [data-tab={name}]")

    def pick(self, control: str, path: str) -> None:
        """Fill a field with the value picker: open it, filter, click the path."""
        self.page.click(f"[aria-label='Pick a value for {control}']")
        self.page.fill("#picker-filter", path)
        self.page.click(f"#picker-list li[data-value='{path}']")

    def shot(self, name: str) -> None:
        """The README's screenshots: with README_SCREENSHOTS=docs, each screen of the scenario
        is saved there as studio-<name>.png."""
        folder = os.environ.get("README_SCREENSHOTS")
        if folder:
            self.page.screenshot(path=str(Path(folder) / f"studio-{name}.png"), full_page=True)

    def use_template(self, name: str) -> None:
        """Make an editable copy of a shipped recipe from its gallery card."""
        card = self.page.locator(f".card[data-recipe='{name}']")
        card.locator("button", has_text="Use this template").click()
        self.banner(f"A copy of {name}")

    def more(self, step: int) -> None:
        self.page.click(f"[data-step='{step}'] details.more summary >> nth=0")

    def banner(self, containing: str) -> str:
        banner = self.page.locator("#banner")
        banner.filter(has_text=containing).wait_for(timeout=UI_S)
        return str(banner.inner_text())

    def close(self) -> None:
        assert self.outside == [], f"requests that left loopback: {self.outside}"
        assert self.errors == [], f"script errors: {self.errors}"
        self.context.close()


def _api(url: str, token: str = EDITOR) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def _commands(page: Any) -> list[dict[str, Any]]:
    outputs = page.locator("#test-output .command pre")
    return [json.loads(outputs.nth(i).inner_text()) for i in range(outputs.count())]


def test_a_new_user_builds_tests_enables_and_runs_a_recipe(
    browser: Any,
    studio_url: str,
    skafka: KafkaSettings,
    worker: WorkerProcess,
    sandbox_server: SandboxServer,
    catalogue: TopicCatalogue,
) -> None:
    ui = _Page(browser, studio_url, EDITOR)
    page = ui.page
    # Start from nothing: a name, what it does, the trigger topic (one of the user's own) and a
    # condition built with the condition row.
    page.click("#new-recipe")
    page.fill("#f-name", NAME)
    page.fill(
        "#f-description", "A web form submission becomes a rights request, then an identity check"
    )
    page.select_option("#trigger-topic", "__own__")
    page.fill("#trigger-own-topic", FORMS)
    page.fill("#condition-field", "data.consent")
    page.select_option("#condition-op", "exists")
    page.click("#add-condition")
    assert page.input_value("#trigger-filter") == "data.consent"
    # A pasted sample tells the picker the fields of the user's topic.
    ui.tab("test")
    sample = {"formId": "F-77", "email": "jeanne.dupont@example.org", "consent": True}
    page.fill("#sample", json.dumps(sample, indent=2))
    ui.tab("builder")

    # Step 1: the rights request, fields filled by typing, ticking and picking.
    page.select_option("#new-step-kind", "create-rights-request")
    page.click("#add-step")
    page.fill("#s0-title", "Web form ")
    ui.pick("s0-title", "data.formId")
    page.check("#s0-purposes >> text=Access")
    ui.more(0)
    ui.pick("s0-email", "data.email")
    page.fill("#s0-refId", "web-{{ data.formId }}")
    page.select_option("#s0-channel", "Form")

    # Step 2: the task; its required label is missing, and the page says so on the field.
    page.select_option("#new-step-kind", "create-task")
    page.click("#add-step")
    label_problem = page.locator("[data-step='1'] .field:has(#s1-label) .problem")
    label_problem.wait_for(timeout=UI_S)
    assert "needs label" in label_problem.inner_text()
    assert page.locator("#validity").inner_text() == "1 problem"
    page.fill("#s1-label", "Check the identity for request ")
    ui.pick("s1-label", "steps.request.result.id")
    ui.more(1)
    page.select_option("#s1-objectType", "DataSubject")
    ui.pick("s1-objectId", "steps.request.result.id")
    page.locator("#validity", has_text="valid").wait_for(timeout=UI_S)
    label_problem.wait_for(state="detached", timeout=UI_S)
    assert page.locator("#tab-builder .problem").count() == 0
    ui.shot("builder")

    # Test on the pasted sample: the exact commands, nothing sent.
    ui.tab("test")
    page.click("#run-test")
    page.locator("#test-verdict").wait_for(timeout=UI_S)
    assert "2 command(s)" in page.inner_text("#test-verdict")
    request, task = _commands(page)
    assert request == {
        "title": "Web form F-77",
        "purposes": ["Access"],
        "email": "jeanne.dupont@example.org",
        "refId": "web-F-77",
        "channel": "Form",
    }
    assert task == {
        "label": "Check the identity for request 1001",
        "objectType": "DataSubject",
        "objectId": "1001",
    }
    assert page.locator("#test-problems").count() == 0
    ui.shot("test")

    # Save, then enable: the worker picks the enabled version up without a restart.
    ui.tab("builder")
    page.click("#save")
    ui.banner("Saved web-form-request, version 1")
    page.click("#toggle-enabled")
    ui.banner("enabled (version 2)")
    wait_for(
        lambda: worker.metric("dastra_studio_recipes_enabled") >= 1,
        RUN_S,
        "the worker to run the enabled studio recipe",
    )

    # The page built what the YAML file says, and both behave the same on every sample.
    with _api(studio_url) as api:
        built = api.get(f"/studio/api/recipes/{NAME}").json()["recipe"]
    _assert_same_behaviour(built, yaml.safe_load(WRITTEN), catalogue)

    # A real event on the topic: the worker creates both items in the sandbox.
    producer = RecordProducer(skafka)
    try:
        producer.send(FORMS, [(b"F-77", [], json.dumps(sample).encode())])
    finally:
        producer.close()
    admin = sandbox_server.admin

    def created() -> tuple[dict[str, Any], dict[str, Any]] | None:
        requests = [r for r in admin.objects("rightsRequests") if r.get("refId") == "web-F-77"]
        tasks = [
            t
            for t in admin.objects("tasks")
            if requests and str(t.get("objectId")) == str(requests[0]["id"])
        ]
        return (requests[0], tasks[0]) if requests and tasks else None

    wait_for(lambda: created() is not None, RUN_S, "the rights request and its identity-check task")
    found = created()
    assert found is not None
    rights_request, check = found
    assert rights_request["title"] == "Web form F-77"
    assert check["label"] == f"Check the identity for request {rights_request['id']}"
    assert len([r for r in admin.objects("rightsRequests") if r.get("refId") == "web-F-77"]) == 1

    # The run in the history, as succeeded (the page refreshes itself).
    ui.tab("history")
    page.select_option("#history-recipe", NAME)
    row = page.locator(f"tr.run[data-recipe='{NAME}'][data-status='succeeded']")
    row.first.wait_for(timeout=int(RUN_S * 1000))
    assert "request ✓" in row.first.inner_text() and "task ✓" in row.first.inner_text()
    row.first.locator("button", has_text="Details").click()
    detail = page.locator("tr.detail").first
    detail.wait_for(timeout=UI_S)
    assert f"recipe:{NAME}:" in detail.inner_text()  # the command ids
    ui.shot("history")
    ui.tab("gallery")
    ui.shot("gallery")

    # The latest events of the trigger topic, as samples for the next test: the one just sent.
    ui.tab("test")
    page.click("#load-samples")
    page.locator("#samples .sample").first.wait_for(timeout=UI_S)
    assert page.locator("#samples .sample").count() == 1
    page.fill("#sample", "")
    page.locator("#samples .sample").first.click()
    assert json.loads(page.input_value("#sample")) == sample
    assert page.input_value("#sample-key") == "F-77"

    # A broken expression: shown on its field, the save refused, the workers never see it.
    ui.tab("builder")
    page.fill("#s0-title", "Web form {{ data.formId( }}")
    title_problem = page.locator("[data-step='0'] .field:has(#s0-title) .problem")
    title_problem.wait_for(timeout=UI_S)
    assert "JMESPath" in title_problem.inner_text()
    page.click("#save")
    ui.banner("Not saved")
    with _api(studio_url) as api:
        assert api.get(f"/studio/api/recipes/{NAME}").json()["version"] == 2
    assert worker.metric("dastra_studio_recipe_versions_refused_total", recipe=NAME) == 0
    ui.close()


def _assert_same_behaviour(
    built: dict[str, Any], written: dict[str, Any], catalogue: TopicCatalogue
) -> None:
    """The same compiled recipe (trigger, filter, steps), and the same commands, ids included,
    for events the filter takes and events it does not."""
    settings = RecipesSettings()
    ours, our_problems = load_document(built, "studio:web-form-request", settings, catalogue)
    theirs, their_problems = load_document(
        written, "recipes/web-form-request.yaml", settings, catalogue
    )
    assert ours is not None and theirs is not None, (our_problems, their_problems)
    assert {**ours.as_json(), "file": ""} == {**theirs.as_json(), "file": ""}
    samples = [
        {"formId": "F-1", "email": "a@example.org", "consent": True},
        {"formId": "F-2", "consent": True},
        {"formId": "F-3", "email": "c@example.org", "consent": False},
        {"formId": "F-4", "email": "d@example.org"},
    ]
    taken = 0
    for index, data in enumerate(samples):
        event = event_context(id=f"e-{index}", data=data, topic=FORMS, partition=0, offset=index)
        results = {"request": {"id": 500 + index}}
        mine, yours = (
            preview_run(recipe, event, settings, run_key=f"e-{index}", results=results)
            for recipe in (ours, theirs)
        )
        assert asdict(mine) == asdict(yours), data
        taken += mine.matches
        assert not mine.problems, mine.problems
    assert taken == 2


def test_send_once_then_a_retry_from_the_history(
    browser: Any, studio_url: str, worker: WorkerProcess, sandbox_server: SandboxServer
) -> None:
    """A saved, disabled recipe sent once from the Test screen; Dastra refuses its second step,
    the history shows the failure, and "Retry" (the fault gone) finishes it without creating the
    first step's rights request again."""
    name = "page-send-once"
    document = {**yaml.safe_load(WRITTEN), "name": name, "enabled": False}
    with _api(studio_url) as api:
        saved = api.put(f"/studio/api/recipes/{name}", json={"recipe": document})
        assert saved.status_code == 201, saved.text
    admin = sandbox_server.admin
    admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=400, body={"message": "no"})
    ui = _Page(browser, studio_url, EDITOR)
    page = ui.page
    try:
        page.locator(f".card[data-recipe='{name}'] button", has_text="Edit").click()
        page.locator("#builder-title", has_text=f"{name} (version 1)").wait_for(timeout=UI_S)
        ui.tab("test")
        sample = {"formId": "F-90", "email": "marc.leroy@example.org", "consent": True}
        page.fill("#sample", json.dumps(sample))
        page.click("#send-once")
        page.locator("#send-note", has_text="Sent once: run").wait_for(timeout=UI_S)

        ui.tab("history")
        page.select_option("#history-recipe", name)
        failed = page.locator(f"tr.run[data-recipe='{name}'][data-status='failed']")
        failed.first.wait_for(timeout=int(RUN_S * 1000))
        failed.first.locator("button", has_text="Details").click()
        detail = page.locator("tr.detail").first
        detail.locator(".problem").first.wait_for(timeout=UI_S)
        assert "task" in detail.inner_text() and f"recipe:{name}:" in detail.inner_text()
        # What each command did: the request's id in the sandbox, the task's dead letter.
        dead = detail.locator(".step-result[data-step='task'] .dead-letter")
        dead.wait_for(timeout=UI_S)
        assert "dastra-rejected" in dead.inner_text()
        made = detail.locator(".step-result[data-step='request'] .command-outcome")
        made.filter(has_text="→ id").wait_for(timeout=UI_S)
        [request] = [r for r in admin.objects("rightsRequests") if r.get("refId") == "web-F-90"]
        assert f"succeeded → id {request['id']}" in made.inner_text()
        admin.clear_faults()
        detail.locator("button.retry").click()
        page.locator("tr.detail .note", has_text="Retrying as run").wait_for(timeout=UI_S)
        done = page.locator(f"tr.run[data-recipe='{name}'][data-status='succeeded']")
        done.first.wait_for(timeout=int(RUN_S * 1000))
        assert "retry" in done.first.inner_text()
    finally:
        admin.clear_faults()
    requests = [r for r in admin.objects("rightsRequests") if r.get("refId") == "web-F-90"]
    assert len(requests) == 1
    tasks = [t for t in admin.objects("tasks") if str(t.get("objectId")) == str(requests[0]["id"])]
    assert len(tasks) == 1
    ui.close()


def test_a_templates_copy_is_edited_and_enabled(
    browser: Any, studio_url: str, worker: WorkerProcess
) -> None:
    ui = _Page(browser, studio_url, EDITOR)
    page = ui.page
    ui.use_template("support-ticket-gdpr-request")
    assert page.input_value("#f-name") == "support-ticket-gdpr-request-copy"
    # Configure it: the help desk's tickets arrive on another topic, and the channel changes.
    assert page.input_value("#trigger-own-topic") == "support.tickets"
    page.fill("#trigger-own-topic", "helpdesk.tickets")
    page.select_option("#s0-channel", "Form")
    page.locator("#validity", has_text="valid").wait_for(timeout=UI_S)
    page.click("#save")
    ui.banner("Saved support-ticket-gdpr-request-copy, version 1")
    page.click("#toggle-enabled")
    ui.banner("enabled (version 2)")
    with _api(studio_url) as api:
        saved = api.get("/studio/api/recipes/support-ticket-gdpr-request-copy").json()
        shipped = api.get("/studio/api/recipes/support-ticket-gdpr-request").json()
    assert saved["source"] == "studio" and saved["enabled"] is True and saved["version"] == 2
    assert saved["recipe"]["trigger"]["topic"] == "helpdesk.tickets"
    assert saved["recipe"]["steps"][0]["with"]["channel"] == "Form"
    assert (
        saved["recipe"]["steps"][0]["with"]["refId"]
        == shipped["recipe"]["steps"][0]["with"]["refId"]
    )
    assert (
        shipped["read_only"] is True and shipped["recipe"]["trigger"]["topic"] == "support.tickets"
    )
    wait_for(
        lambda: (
            worker.metric(
                "dastra_studio_recipe_versions_applied_total",
                recipe="support-ticket-gdpr-request-copy",
            )
            >= 2
        ),
        RUN_S,
        "the worker to apply the enabled copy",
    )
    ui.close()


def test_a_read_only_token_cannot_save_enable_or_copy(browser: Any, studio_url: str) -> None:
    ui = _Page(browser, studio_url, VIEWER)
    page = ui.page
    assert "read-only" in page.inner_text("#who")
    assert page.locator("#new-recipe").is_disabled()
    card = page.locator(".card[data-recipe='new-request-dpo-task']")
    assert card.locator("button", has_text="Use this template").is_disabled()
    assert card.locator("button", has_text="Export YAML").is_enabled()
    ui.tab("builder")
    assert page.locator("#save").is_disabled()
    assert page.locator("#toggle-enabled").is_disabled()
    # What the button would have sent is refused by the API too.
    with _api(studio_url, VIEWER) as api:
        answer = api.put(
            "/studio/api/recipes/viewer-attempt",
            json={"recipe": {**yaml.safe_load(WRITTEN), "name": "viewer-attempt"}},
        )
    assert answer.status_code == 403 and answer.json()["error"] == "read-only-token"
    ui.close()


CRM_FIELDS = [
    "requestId",
    "refId",
    "workspaceId",
    "state",
    "closedReason",
    "dateClosed",
    "purposes",
]


def test_a_crm_copy_gets_its_own_topic_in_the_settings_and_the_worker_publishes_there(
    browser: Any, studio_url: str, skafka: KafkaSettings, worker: WorkerProcess
) -> None:
    topic = "crm.studio-v2"
    admin = AdminClient(skafka.confluent_config())
    for future in admin.create_topics([NewTopic(skafka.topic(topic), 1, 1)]).values():
        future.result(timeout=30)
    ui = _Page(browser, studio_url, EDITOR)
    page = ui.page
    try:
        ui.use_template("request-closed-to-crm")
        # The message step: a topic of the user's own (a setting) and every field of the message.
        assert page.input_value("#s0-topic") == "__own__"
        assert page.input_value("#s0-own-topic") == "{{ settings.crm_topic }}"
        names = page.locator("[id^='s0-field-']")
        assert [names.nth(i).input_value() for i in range(names.count())] == CRM_FIELDS
        assert page.input_value("#s0-value-1") == "{{ data.refId }}"
        page.click("#s0-add-field")
        page.fill("#s0-field-7", "source")
        page.fill("#s0-value-7", "studio")
        # The settings panel: the CRM topic the recipe reads, unset (RECIPES_CRM_TOPIC's).
        setting = page.locator("#setting-crm_topic")
        assert setting.get_attribute("placeholder") == "crm.dastra-updates"
        assert setting.input_value() == ""
        setting.fill(topic)
        page.locator("#validity", has_text="valid").wait_for(timeout=UI_S)
        page.click("#show-yaml")
        page.locator("#yaml", has_text="crm.studio-v2").wait_for(timeout=UI_S)
        shown = page.inner_text("#yaml")
        name = "request-closed-to-crm-copy"
        page.click("#save")
        ui.banner(f"Saved {name}, version 1")
        page.click("#toggle-enabled")
        ui.banner("enabled (version 2)")
        with _api(studio_url) as api:
            exported = api.get(f"/studio/api/recipes/{name}/export").text
            shipped = api.get("/studio/api/recipes/request-closed-to-crm").json()["recipe"]
        # What the builder showed is the file saved (bar the enabling after it).
        assert yaml.safe_load(exported) == {**yaml.safe_load(shown), "enabled": True}
        saved = yaml.safe_load(exported)
        assert saved["settings"] == {"crm_topic": topic}
        publish = shipped["steps"][0]["publish"]
        assert saved["steps"][0]["publish"] == {
            **publish,
            "data": {**publish["data"], "source": "studio"},
        }
        wait_for(
            lambda: worker.metric("dastra_studio_recipe_versions_applied_total", recipe=name) >= 2,
            RUN_S,
            "the worker to apply the enabled copy",
        )

        # A request closed in Dastra: the worker sends the CRM's message to the topic set here.
        ref_id = unique("crm")
        event = new_event(
            type="eu.dastra.rights_request.updated",
            source="dastra://workspaces/101",
            id=unique("evt"),
            data={
                "id": 4521,
                "refId": ref_id,
                "state": "Closed",
                "closedReason": "Accepted",
                "dateClosed": "2026-03-20T16:02:11.480Z",
                "purposes": ["Access"],
            },
        )
        headers, value = encode_binary(event)
        producer = RecordProducer(skafka)
        try:
            producer.send(RIGHTS_REQUESTS, [(b"4521", list(headers), value)])
        finally:
            producer.close()

        def published() -> list[Any]:
            return list(read_to_end(skafka, skafka.topic(topic), timeout=15))

        wait_for(lambda: published() != [], RUN_S, f"the CRM's message on {topic}")
        [record] = published()
        assert record.key == ref_id.encode()
        assert header_dict(record.headers)["ce_type"] == b"eu.dastra.recipe.rights_request.closed"
        message = json.loads(record.value or b"")
        assert list(message) == [*CRM_FIELDS, "source"]
        assert message["refId"] == ref_id and message["requestId"] == 4521
        assert message["source"] == "studio" and message["workspaceId"] == 101
    finally:
        delete_topics(skafka, [skafka.topic(topic)])
    ui.close()


def test_an_erasure_copy_gets_systems_of_its_own_in_the_settings_panel(
    browser: Any, studio_url: str
) -> None:
    ui = _Page(browser, studio_url, EDITOR)
    page = ui.page
    ui.use_template("erasure-task-per-system")
    assert page.input_value("#s0-foreach") == "settings.erasure_systems"
    # Unset, the list shows RECIPES_ERASURE_SYSTEMS; edited, it becomes the recipe's own.
    rows = page.locator("#setting-erasure_systems input")
    defaults = RecipesSettings().erasure_systems
    assert [rows.nth(i).input_value() for i in range(rows.count())] == defaults
    assert "(default)" in page.inner_text(".setting[data-setting='erasure_systems'] label")
    for n in range(len(defaults), 1, -1):
        page.click(f"[aria-label='Remove erasure_systems {n}']")
    assert rows.count() == 1
    page.fill("#setting-erasure_systems-0", "Payroll")
    page.click("#setting-erasure_systems-add")
    page.fill("#setting-erasure_systems-1", "Archive")
    page.locator("#validity", has_text="valid").wait_for(timeout=UI_S)

    # Its test: one task per system of its own (the template's example as the sample).
    ui.tab("test")
    page.click("#run-test")
    page.locator("#test-verdict").wait_for(timeout=UI_S)
    systems = [command["additionalDatas"]["erasureSystem"] for command in _commands(page)]
    assert systems == ["Payroll", "Archive"]

    ui.tab("builder")
    page.click("#save")
    name = "erasure-task-per-system-copy"
    ui.banner(f"Saved {name}, version 1")
    with _api(studio_url) as api:
        saved = api.get(f"/studio/api/recipes/{name}").json()
    assert saved["recipe"]["settings"] == {"erasure_systems": ["Payroll", "Archive"]}
    assert saved["problems"] == []
    # "Use the default" gives the list back to RECIPES_ERASURE_SYSTEMS.
    page.click(".setting[data-setting='erasure_systems'] button:has-text('Use the default')")
    assert [rows.nth(i).input_value() for i in range(rows.count())] == defaults
    page.click("#show-yaml")
    page.locator("#yaml", has_text=f"name: {name}").wait_for(timeout=UI_S)
    assert "\nsettings:" not in page.inner_text("#yaml")
    ui.close()
