// The studio's page: gallery, builder, test and history of recipes, on the studio's API only.
// Plain DOM, no framework, nothing loaded from elsewhere. The recipe being built is one JSON
// document (`S.doc`, the YAML file's structure); the forms write into it and the server checks
// it as `recipes validate` does, as you type.
"use strict";

const S = {
  token: sessionStorage.getItem("studio-token") || "",
  me: null,
  catalogue: null,
  recipes: [],
  doc: null,
  baseVersion: null, // the saved version the builder's document was loaded from
  savedName: null,
  dirty: false,
  problems: [],
  sampleData: null,
  expanded: new Set(),
  historyTimer: null,
  settingsShown: "", // the settings the panel shows, to redraw it when the recipe reads others
  addedSettings: new Set(), // settings added with "Add setting", shown while unset
  outcomes: new Map(), // run + version -> what its commands did (null: being read)
};
const NOTIFICATIONS = "dastra.notifications.v1";
const OWN_TOPIC = "__own__";

// --- small helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const clone = (value) => JSON.parse(JSON.stringify(value));
const isEditor = () => S.me && S.me.role === "editor";

function banner(message, ok) {
  const node = $("banner");
  node.textContent = message;
  node.className = ok ? "banner ok" : "banner";
  node.hidden = !message;
}

async function api(method, path, body, options = {}) {
  const headers = { Authorization: "Bearer " + S.token };
  let payload;
  if (options.raw !== undefined) {
    headers["Content-Type"] = "application/yaml";
    payload = options.raw;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (error) {
    banner("The studio did not answer: " + error.message);
    return { status: 0, ok: false, body: null, text: "" };
  }
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* YAML or empty */ }
  if (response.status === 401 && !options.signingIn) signIn("Your token was refused; sign in again.");
  return { status: response.status, ok: response.ok, body: json, text };
}

function explain(answer) {
  const body = answer.body || {};
  const details = (body.problems || []).map((p) => (p.field ? p.field + ": " : "") + p.message);
  return [body.message || "HTTP " + answer.status, ...details].join("; ");
}

// --- sign in and tabs -----------------------------------------------------------------------

function signIn(message) {
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  if (!$("login").open) $("login").showModal();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  S.token = $("token").value.trim();
  const answer = await api("GET", "/studio/api/catalogue", undefined, { signingIn: true });
  if (!answer.ok) {
    signIn(answer.status === 401 ? "This token is not a studio token." : explain(answer));
    return;
  }
  sessionStorage.setItem("studio-token", S.token);
  $("login").close();
  start(answer.body);
});

function showTab(name) {
  for (const tab of document.querySelectorAll("nav [role=tab]")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    $("tab-" + tab.dataset.tab).hidden = !on;
  }
  clearInterval(S.historyTimer);
  if (name === "history") {
    loadRuns();
    S.historyTimer = setInterval(loadRuns, 3000);
  }
  if (name === "test") prepareTest();
}

for (const tab of document.querySelectorAll("nav [role=tab]")) {
  tab.addEventListener("click", () => showTab(tab.dataset.tab));
}

function start(catalogue) {
  S.catalogue = catalogue;
  S.me = catalogue.me;
  $("who").textContent = (isEditor() ? "editor" : "read-only") + " · token " + S.me.token_id;
  document.body.classList.toggle("reader", !isEditor());
  fillStepKinds();
  newRecipe(false);
  loadGallery();
}

// --- gallery --------------------------------------------------------------------------------

async function loadGallery() {
  const answer = await api("GET", "/studio/api/recipes");
  if (!answer.ok) return banner(explain(answer));
  S.recipes = answer.body.recipes;
  const cards = S.recipes.map((recipe) => {
    const buttons = [];
    if (recipe.read_only) {
      buttons.push(h("button", { class: "editor-only", onclick: () => useTemplate(recipe.name) }, "Use this template"));
    } else {
      buttons.push(h("button", { onclick: () => openRecipe(recipe.name) }, isEditor() ? "Edit" : "Open"));
      buttons.push(h("button", { class: "editor-only", onclick: () => toggle(recipe) }, recipe.enabled ? "Disable" : "Enable"));
      buttons.push(h("button", { class: "editor-only danger", onclick: () => remove(recipe) }, "Delete"));
    }
    buttons.push(h("button", { onclick: () => exportYaml(recipe.name) }, "Export YAML"));
    return h("article", { class: "card", "data-recipe": recipe.name },
      h("h3", {}, recipe.name),
      h("div", {},
        h("span", { class: "chip muted" }, recipe.source + (recipe.version ? " v" + recipe.version : "")), " ",
        h("span", { class: "chip " + (recipe.enabled ? "ok" : "muted") }, recipe.enabled ? "enabled" : "disabled"), " ",
        recipe.valid ? null : h("span", { class: "chip bad" }, "invalid")),
      h("div", { class: "desc" }, recipe.description || ""),
      h("div", { class: "meta" }, "When: " + (recipe.trigger || "?")),
      h("div", { class: "actions" }, buttons));
  });
  $("gallery").replaceChildren(...cards);
  const select = $("history-recipe");
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "" }, "all"),
    ...S.recipes.map((r) => h("option", { value: r.name }, r.name)));
  select.value = chosen;
  lockForReaders();
}

function lockForReaders() {
  for (const node of document.querySelectorAll(".editor-only")) {
    if (!isEditor()) {
      node.disabled = true;
      node.title = "This token may look, not change (read-only)";
    }
  }
}

async function useTemplate(name) {
  const answer = await api("GET", "/studio/api/recipes/" + encodeURIComponent(name));
  if (!answer.ok) return banner(explain(answer));
  const doc = clone(answer.body.recipe);
  const taken = new Set(S.recipes.map((r) => r.name));
  let copy = name + "-copy";
  for (let n = 2; taken.has(copy); n++) copy = name + "-copy-" + n;
  doc.name = copy;
  doc.enabled = false;
  load(doc, null, null);
  banner("A copy of " + name + " to edit: change what you need, then save.", true);
  showTab("builder");
}

async function openRecipe(name) {
  const answer = await api("GET", "/studio/api/recipes/" + encodeURIComponent(name));
  if (!answer.ok) return banner(explain(answer));
  load(clone(answer.body.recipe), answer.body.version, name);
  banner("");
  showTab("builder");
}

async function toggle(recipe) {
  const verb = recipe.enabled ? "disable" : "enable";
  const answer = await api("POST", `/studio/api/recipes/${encodeURIComponent(recipe.name)}/${verb}`, { base_version: recipe.version });
  if (!answer.ok) return banner(explain(answer));
  if (S.savedName === recipe.name) {
    S.baseVersion = answer.body.version;
    S.doc.enabled = answer.body.enabled;
    renderToggle();
  }
  banner(`${recipe.name}: ${verb}d (version ${answer.body.version}).`, true);
  loadGallery();
}

async function remove(recipe) {
  if (!confirm("Delete " + recipe.name + "? Workers stop running it.")) return;
  const answer = await api("DELETE", `/studio/api/recipes/${encodeURIComponent(recipe.name)}?base_version=${recipe.version}`);
  if (!answer.ok) return banner(explain(answer));
  banner(recipe.name + " deleted.", true);
  loadGallery();
}

async function exportYaml(name) {
  const answer = await api("GET", `/studio/api/recipes/${encodeURIComponent(name)}/export`);
  if (!answer.ok) return banner(explain(answer));
  const link = h("a", { href: URL.createObjectURL(new Blob([answer.text], { type: "application/yaml" })), download: name + ".yaml" });
  document.body.append(link);
  link.click();
  link.remove();
}

$("import-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const text = await file.text();
  event.target.value = "";
  const match = text.match(/^name:\s*["']?([a-z0-9-]+)/m);
  const existing = match && S.recipes.find((r) => r.name === match[1] && !r.read_only);
  const query = existing ? "?base_version=" + existing.version : "";
  const answer = await api("POST", "/studio/api/import" + query, undefined, { raw: text });
  if (!answer.ok) return banner("Import refused: " + explain(answer));
  banner(`Imported ${answer.body.name} (version ${answer.body.version}).`, true);
  loadGallery();
});

$("new-recipe").addEventListener("click", () => newRecipe(true));

function newRecipe(show) {
  load({ name: "", description: "", enabled: false, trigger: { topic: "dastra.rights-requests.v1" }, steps: [] }, null, null);
  banner("");
  if (show) showTab("builder");
}

// --- builder --------------------------------------------------------------------------------

function load(doc, version, savedName) {
  S.doc = doc;
  S.addedSettings = new Set();
  S.baseVersion = version;
  S.savedName = savedName;
  S.dirty = false;
  S.problems = [];
  S.sampleData = doc.example && doc.example.data !== undefined ? doc.example.data : null;
  $("sample").value = "";
  $("assumed").value = "";
  $("test-output").replaceChildren();
  $("f-name").value = doc.name || "";
  $("f-name").disabled = !!savedName;
  $("f-description").value = doc.description || "";
  $("builder-title").textContent = savedName ? `${savedName} (version ${version})` : "New recipe";
  renderTrigger();
  renderSteps();
  renderSettings();
  renderToggle();
  validateSoon(0);
}

function changed() {
  S.dirty = true;
  if (settingsShown() !== S.settingsShown) renderSettings();
  validateSoon();
}

$("f-name").addEventListener("input", (e) => { S.doc.name = e.target.value.trim(); changed(); });
$("f-description").addEventListener("input", (e) => { S.doc.description = e.target.value; changed(); });

function catalogueTopic(name) {
  return S.catalogue.trigger_topics.find((t) => t.name === name);
}

function renderTrigger() {
  const root = $("trigger");
  const doc = S.doc;
  if (!doc.trigger && doc.schedule) {
    const filter = h("input", { id: "schedule-filter", "data-path": "schedule.filter", value: doc.schedule.filter || "", class: "mono" });
    filter.addEventListener("input", () => { setOrDelete(doc.schedule, "filter", filter.value.trim()); changed(); });
    root.replaceChildren(
      h("p", {}, `On a schedule: every item of Dastra's ${doc.schedule.list} list that passes the filter` +
        (doc.schedule.every ? `, every ${doc.schedule.every}` : "") + "."),
      field("Filter", filter, "An expression on each item (data.*)"));
    return;
  }
  doc.trigger = doc.trigger || { topic: "" };
  const trigger = doc.trigger;
  const known = catalogueTopic(trigger.topic);
  const topic = h("select", { id: "trigger-topic", "data-path": "trigger.topic" },
    ...S.catalogue.trigger_topics.map((t) => h("option", { value: t.name }, t.name)),
    h("option", { value: OWN_TOPIC }, "A topic of your own…"));
  topic.value = known ? trigger.topic : OWN_TOPIC;
  topic.addEventListener("change", () => {
    trigger.topic = topic.value === OWN_TOPIC ? "" : topic.value;
    delete trigger.type;
    changed();
    renderTrigger();
  });
  const parts = [field("Topic", topic, known ? known.description : "Records of one of your topics, e.g. web.privacy-forms; their data is what the steps read.")];
  if (!known) {
    const own = h("input", { id: "trigger-own-topic", "data-path": "trigger.topic", value: trigger.topic || "", placeholder: "web.privacy-forms", autocomplete: "off" });
    own.addEventListener("input", () => { trigger.topic = own.value.trim(); changed(); });
    parts.push(field("Your topic", own));
    const type = h("input", { id: "trigger-type", "data-path": "trigger.type", value: trigger.type || "", placeholder: "any", autocomplete: "off" });
    type.addEventListener("input", () => { setOrDelete(trigger, "type", type.value.trim()); changed(); });
    parts.push(field("Event type (ce_type), optional", type));
  } else {
    const type = h("select", { id: "trigger-type", "data-path": "trigger.type" },
      h("option", { value: "" }, "any event"), ...known.event_types.map((t) => h("option", { value: t }, t)));
    type.value = trigger.type || "";
    type.addEventListener("change", () => { setOrDelete(trigger, "type", type.value); changed(); });
    parts.push(field("Event type", type));
  }
  const filter = h("input", { id: "trigger-filter", "data-path": "trigger.filter", value: trigger.filter || "", class: "mono", placeholder: "every event", autocomplete: "off" });
  filter.addEventListener("input", () => { setOrDelete(trigger, "filter", filter.value.trim()); changed(); });
  parts.push(field("Only when (filter)", filter, "A JMESPath condition; build one below or write it."));
  parts.push(conditionBuilder(trigger, filter));
  root.replaceChildren(...parts);
}

function conditionBuilder(trigger, filterInput) {
  const paths = h("input", { id: "condition-field", "aria-label": "Condition field", list: "condition-fields", placeholder: "data.field", class: "mono", autocomplete: "off" });
  const known = h("datalist", { id: "condition-fields" }, ...dataEntries().map((e) => h("option", { value: e.path })));
  const op = h("select", { id: "condition-op", "aria-label": "Condition" },
    h("option", { value: "==" }, "equals"), h("option", { value: "!=" }, "is not"),
    h("option", { value: "exists" }, "is present"), h("option", { value: "contains" }, "contains"));
  const value = h("input", { id: "condition-value", placeholder: "value", "aria-label": "Condition value", autocomplete: "off" });
  const add = h("button", {
    id: "add-condition",
    onclick: () => {
      const path = paths.value.trim();
      if (!path) return;
      const literal = JSON.stringify(value.value).slice(1, -1).replace(/'/g, "\\'");
      const text = op.value === "exists" ? path
        : op.value === "contains" ? `contains(${path} || '', '${literal}')`
        : `${path} ${op.value} '${literal}'`;
      trigger.filter = trigger.filter ? `${trigger.filter} && ${text}` : text;
      filterInput.value = trigger.filter;
      value.value = "";
      changed();
    },
  }, "Add condition");
  return h("div", { class: "condition" }, "Add a condition:", paths, known, op, value, add);
}

function field(label, control, help, required) {
  const id = control.id || "";
  return h("div", { class: "field" },
    h("label", { for: id }, label, required ? h("span", { class: "required", title: "required" }, " *") : null),
    control.classList && control.classList.contains("control") ? control : h("div", { class: "control" }, control),
    help ? h("small", {}, help) : null);
}

function setOrDelete(object, key, value) {
  if (value === "" || value === undefined || value === null) delete object[key];
  else object[key] = value;
}

// --- settings -------------------------------------------------------------------------------

// The recipe's own values of settings.* (its `settings:` block): the settings its fields read,
// and any it sets, each with a control of its kind; unset, RECIPES_* gives the value.
function settingSpec(name) {
  return S.catalogue.recipe_settings.find((s) => s.name === name);
}

function settingsShown() {
  const own = S.doc.settings || {};
  const rest = JSON.stringify({ ...S.doc, settings: undefined });
  const read = [...rest.matchAll(/settings\.([A-Za-z_]+)/g)].map((m) => m[1]);
  return S.catalogue.recipe_settings.map((s) => s.name).filter((n) => n in own || read.includes(n) || S.addedSettings.has(n)).join(",");
}

function renderSettings() {
  S.settingsShown = settingsShown();
  const names = S.settingsShown ? S.settingsShown.split(",") : [];
  const parts = names.length ? names.map(settingControl)
    : [h("p", { class: "note" }, "This recipe reads no setting. Its fields may read settings.* (the value picker lists them).")];
  const others = S.catalogue.recipe_settings.filter((s) => !names.includes(s.name));
  if (others.length) {
    const choice = h("select", { id: "new-setting", "aria-label": "Setting to add" }, ...others.map((s) => h("option", { value: s.name }, s.name)));
    parts.push(h("div", { class: "add-step editor-only" }, choice,
      h("button", { id: "add-setting", onclick: () => { S.addedSettings.add(choice.value); renderSettings(); } }, "Add setting")));
  }
  $("settings").replaceChildren(...parts);
  lockForReaders();
}

function setSetting(name, value) {
  const own = (S.doc.settings = S.doc.settings || {});
  if (value === undefined) delete own[name];
  else own[name] = value;
  if (!Object.keys(own).length) delete S.doc.settings;
  changed();
}

function settingControl(name) {
  const spec = settingSpec(name);
  const own = S.doc.settings || {};
  const set = name in own;
  const id = "setting-" + name;
  const path = "settings." + name;
  const fallback = spec.default === null ? "unset" : JSON.stringify(spec.default);
  const help = `${spec.description} Not set here: RECIPES_${name.toUpperCase()} (${fallback}).`;
  let control;
  if (spec.control === "list" || spec.control === "object") {
    control = settingRows(name, spec, set ? own[name] : clone(spec.default));
  } else if (spec.control === "boolean") {
    control = h("input", { id, type: "checkbox", "data-path": path, checked: set ? own[name] === true : spec.default === true });
    control.addEventListener("change", () => setSetting(name, control.checked));
  } else {
    const number = spec.control === "number";
    control = h("input", { id, "data-path": path, type: number ? "number" : "text", value: set ? String(own[name] ?? "") : "", placeholder: spec.default === null ? "" : String(spec.default), autocomplete: "off", class: "mono" });
    control.addEventListener("input", () => {
      const text = control.value.trim();
      setSetting(name, text === "" ? undefined : number && /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text);
    });
  }
  const reset = h("button", { class: "small editor-only", title: "Take the value from RECIPES_*", onclick: () => { S.addedSettings.add(name); setSetting(name, undefined); renderSettings(); } }, "Use the default");
  return h("div", { class: "setting", "data-setting": name },
    field(name + (set ? "" : " (default)"), h("div", { class: "control" }, control, set ? reset : null), help));
}

// A list (one row per item) or an object (one row per name -> value); any change sets the
// recipe's own value to what the rows show.
function settingRows(name, spec, value) {
  const object = spec.control === "object";
  const rows = object ? Object.entries(value || {}) : (value || []).map((item) => [null, item]);
  const shown = (v) => (typeof v === "string" ? v : JSON.stringify(v));
  const parse = (text) => { if (/^[[{]/.test(text.trim())) { try { return JSON.parse(text); } catch (_) { /* text */ } } return text; };
  const write = () => setSetting(name, object ? Object.fromEntries(rows.filter((r) => r[0])) : rows.map((r) => r[1]));
  const holder = h("div", { class: "rows", id: "setting-" + name, "data-path": "settings." + name });
  const render = () => {
    holder.replaceChildren(...rows.map((row, n) => {
      const item = [];
      if (object) {
        const key = h("input", { id: `setting-${name}-key-${n}`, class: "mono name", value: row[0], placeholder: "name", "aria-label": `${name} ${n + 1} name`, autocomplete: "off" });
        key.addEventListener("input", () => { row[0] = key.value.trim(); write(); });
        item.push(key);
      }
      const input = h("input", { id: `setting-${name}-${n}`, "data-path": `settings.${name}` + (object ? `.${row[0]}` : `[${n}]`), value: shown(row[1]), "aria-label": `${name} ${n + 1}`, autocomplete: "off" });
      input.addEventListener("input", () => { row[1] = parse(input.value); write(); });
      item.push(input, h("button", { class: "small danger editor-only", "aria-label": `Remove ${name} ${n + 1}`, onclick: () => { rows.splice(n, 1); write(); renderSettings(); } }, "Remove"));
      return h("div", { class: "row-item" }, item);
    }), h("button", { id: `setting-${name}-add`, class: "small editor-only", onclick: () => {
      rows.push(object ? ["", ""] : [null, ""]);
      render();
      holder.querySelector(`#setting-${name}-${object ? "key-" : ""}${rows.length - 1}`).focus();
    } }, object ? "Add value" : "Add item"));
    lockForReaders();
  };
  render();
  return holder;
}

// --- steps ----------------------------------------------------------------------------------

const STEP_NAMES = {
  "create-task": "task", "create-rights-request": "request", "create-actor": "actor",
  "find-or-create-actor": "actor", "search-actors": "search", "link-actor-to-processing": "link",
};

function fillStepKinds() {
  $("new-step-kind").replaceChildren(
    ...S.catalogue.actions.map((a) => h("option", { value: a.name }, a.name + " — " + a.description)),
    h("option", { value: "publish" }, "a message to a topic"));
}

$("add-step").addEventListener("click", () => {
  const kind = $("new-step-kind").value;
  const taken = new Set(S.doc.steps.map((s) => s.id));
  const base = kind === "publish" ? "notify" : STEP_NAMES[kind] || "step";
  let id = base;
  for (let n = 2; taken.has(id); n++) id = base + n;
  S.doc.steps.push(kind === "publish"
    ? { id, publish: { topic: NOTIFICATIONS, type: "eu.example.recipe.notice", data: { title: "" } } }
    : { id, command: kind, with: {} });
  changed();
  renderSteps();
});

function actionSpec(name) {
  return S.catalogue.actions.find((a) => a.name === name);
}

function renderSteps() {
  const steps = S.doc.steps || [];
  $("steps").replaceChildren(...(steps.length ? steps.map((step, index) => renderStep(step, index))
    : [h("p", { class: "note" }, "No step yet: add one below.")]));
  lockForReaders();
}

function renderStep(step, index) {
  const at = `steps[${index}]`;
  const id = h("input", { id: `s${index}-id`, class: "mono", "data-path": `${at}.id`, value: step.id || "", "aria-label": `Step ${index + 1} id`, size: 12 });
  id.addEventListener("input", () => { step.id = id.value.trim(); changed(); });
  const move = (delta) => {
    const steps = S.doc.steps;
    const to = index + delta;
    if (to < 0 || to >= steps.length) return;
    [steps[index], steps[to]] = [steps[to], steps[index]];
    changed();
    renderSteps();
  };
  const head = h("div", { class: "step-head" },
    h("span", { class: "kind" }, `Step ${index + 1}`), id,
    h("span", { "data-path": step.publish ? `${at}.publish` : `${at}.command` },
      step.publish ? "message to " + step.publish.topic : step.command),
    h("span", { class: "spacer" }),
    h("button", { class: "small editor-only", title: "Move up", onclick: () => move(-1) }, "↑"),
    h("button", { class: "small editor-only", title: "Move down", onclick: () => move(1) }, "↓"),
    h("button", { class: "small danger editor-only", onclick: () => { S.doc.steps.splice(index, 1); changed(); renderSteps(); } }, "Remove"));
  const when = h("input", { id: `s${index}-when`, class: "mono", "data-path": `${at}.when`, value: step.when || "", placeholder: "always", autocomplete: "off" });
  when.addEventListener("input", () => { setOrDelete(step, "when", when.value.trim()); changed(); });
  const body = [head];
  if (step.foreach !== undefined) {
    const foreach = h("input", { id: `s${index}-foreach`, class: "mono", "data-path": `${at}.foreach`, value: step.foreach, autocomplete: "off" });
    foreach.addEventListener("input", () => { step.foreach = foreach.value.trim(); changed(); });
    body.push(field("For each item of", foreach, "A list (e.g. settings.erasure_systems, set under Settings): the step runs once per item, read as item."));
  }
  if (step.publish) {
    body.push(...publishFields(step, index));
  } else {
    const spec = actionSpec(step.command);
    if (spec) body.push(...schemaFields(spec.schema, (step.with = step.with || {}), `${at}.with`, index, `s${index}`));
    else body.push(h("p", { class: "problem" }, "Unknown action " + step.command));
  }
  body.push(h("details", { class: "more" }, h("summary", {}, "Run this step only when…"), field("Condition (expression)", when)));
  return h("div", { class: "step", "data-step": index }, body);
}

function publishFields(step, index) {
  const at = `steps[${index}].publish`;
  const publish = step.publish;
  const spec = S.catalogue.publish_topics.find((t) => t.name === publish.topic);
  const topic = h("select", { id: `s${index}-topic`, "data-path": `${at}.topic` },
    ...S.catalogue.publish_topics.map((t) => h("option", { value: t.name }, t.name)),
    h("option", { value: OWN_TOPIC }, "A topic of your own…"));
  topic.value = spec ? publish.topic : OWN_TOPIC;
  topic.addEventListener("change", () => {
    publish.topic = topic.value === OWN_TOPIC ? "" : topic.value;
    changed();
    renderSteps();
  });
  const type = h("input", { id: `s${index}-type`, "data-path": `${at}.type`, value: publish.type || "", class: "mono" });
  type.addEventListener("input", () => { publish.type = type.value.trim(); changed(); });
  const key = withPicker(h("input", { id: `s${index}-key`, "data-path": `${at}.key`, value: publish.key || "", autocomplete: "off" }), index, (v) => { setOrDelete(publish, "key", v); });
  publish.data = publish.data || {};
  const parts = [field("Topic", topic, spec ? spec.description : "A topic of yours (created beforehand); its records are CloudEvents with the fields below.")];
  if (!spec) {
    const own = h("input", { id: `s${index}-own-topic`, "data-path": `${at}.topic`, class: "mono", value: publish.topic || "", placeholder: "crm.dastra-updates", autocomplete: "off" });
    own.addEventListener("input", () => { publish.topic = own.value.trim(); changed(); });
    parts.push(field("Your topic", own, "A topic name, or a setting: {{ settings.crm_topic }} (see Settings)."));
  }
  parts.push(field("Type (ce_type)", type), field("Key", key, "Optional; records with one key stay in order."));
  if (spec) parts.push(...schemaFields(spec.schema, publish.data, `${at}.data`, index, `s${index}-data`));
  else parts.push(messageRows(publish, at, index));
  return parts;
}

// The fields of a message to a topic of yours: free name -> value rows, in the message's order.
// A value that is text stays text; any other (a number, a list) is edited as JSON.
function messageRows(publish, at, stepIndex) {
  const rows = Object.entries(publish.data).map(([name, value]) => ({ name, value, text: typeof value === "string" }));
  const write = () => {
    publish.data = Object.fromEntries(rows.filter((r) => r.name).map((r) => [r.name, r.value]));
    changed();
  };
  const holder = h("div", { class: "rows", id: `s${stepIndex}-fields`, "data-path": `${at}.data` });
  const render = () => {
    holder.replaceChildren(h("div", { class: "note" }, "The message's fields (name → value)"), ...rows.map((row, n) => {
      const name = h("input", { id: `s${stepIndex}-field-${n}`, class: "mono name", value: row.name, placeholder: "name", "aria-label": `Field ${n + 1} name`, autocomplete: "off" });
      name.addEventListener("input", () => { row.name = name.value.trim(); write(); });
      const shown = row.text ? row.value : JSON.stringify(row.value);
      const value = h("input", { id: `s${stepIndex}-value-${n}`, "data-path": `${at}.data.${row.name}`, value: shown, "aria-label": `Field ${n + 1} value`, autocomplete: "off" });
      const onValue = (text) => {
        if (row.text) { row.value = text; return write(); }
        try { row.value = JSON.parse(text); } catch (_) { row.value = text; }
        write();
      };
      const remove = h("button", { class: "small danger editor-only", "aria-label": `Remove field ${n + 1}`, onclick: () => { rows.splice(n, 1); write(); render(); } }, "Remove");
      return h("div", { class: "row-item" }, name, withPicker(value, stepIndex, onValue), remove);
    }), h("button", { id: `s${stepIndex}-add-field`, class: "small editor-only", onclick: () => { rows.push({ name: "", value: "", text: true }); render(); holder.querySelector(`#s${stepIndex}-field-${rows.length - 1}`).focus(); } }, "Add field"));
    lockForReaders();
  };
  render();
  return holder;
}

function resolve(schema, root) {
  for (let i = 0; i < 5 && schema; i++) {
    if (schema.$ref) {
      const name = schema.$ref.split("/").pop();
      schema = { ...(root.$defs || {})[name], ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== "$ref")) };
      continue;
    }
    const branches = (schema.anyOf || []).filter((b) => b.type !== "null");
    if (schema.anyOf && branches.length === 1) {
      const rest = Object.fromEntries(Object.entries(schema).filter(([k]) => k !== "anyOf"));
      schema = { ...rest, ...branches[0] };
      continue;
    }
    break;
  }
  return schema || {};
}

function schemaFields(schema, target, at, stepIndex, idPrefix) {
  const required = new Set(schema.required || []);
  const names = Object.keys(schema.properties || {});
  const shown = names.filter((n) => required.has(n) || target[n] !== undefined);
  const more = names.filter((n) => !shown.includes(n));
  const make = (name) => fieldFor(name, resolve(schema.properties[name], schema), required.has(name), target, `${at}.${name}`, stepIndex, `${idPrefix}-${name}`);
  const out = shown.map(make);
  if (more.length) {
    const details = h("details", { class: "more" }, h("summary", {}, `More fields (${more.length})`));
    details.addEventListener("toggle", () => {
      if (details.open && details.children.length === 1) { details.append(...more.map(make)); lockForReaders(); }
    }, { once: false });
    out.push(details);
  }
  return out;
}

function fieldFor(name, schema, required, target, path, stepIndex, id) {
  const help = [schema.description, schema.default !== undefined && schema.default !== null ? "Default: " + schema.default : null].filter(Boolean).join(" ");
  const value = target[name];
  const items = schema.type === "array" ? resolve(schema.items || {}, schema) : null;
  if (items && items.enum) {
    const chosen = new Set(Array.isArray(value) ? value : []);
    const boxes = items.enum.map((option) => {
      const box = h("input", { type: "checkbox", value: option, checked: chosen.has(option) });
      box.addEventListener("change", () => {
        const picked = [...group.querySelectorAll("input:checked")].map((b) => b.value);
        setOrDelete(target, name, picked.length ? picked : undefined);
        changed();
      });
      return h("label", {}, box, option);
    });
    const group = h("div", { class: "checks control", id, "data-path": path, role: "group", "aria-label": name }, boxes);
    return field(name, group, help, required);
  }
  if (schema.enum || schema.type === "boolean") {
    const options = schema.enum ? schema.enum.map(String) : ["true", "false"];
    const select = h("select", { id, "data-path": path }, h("option", { value: "" }, "—"), ...options.map((o) => h("option", { value: o }, o)));
    if (value !== undefined && !options.includes(String(value))) select.append(h("option", { value: String(value) }, String(value)));
    select.value = value === undefined ? "" : String(value);
    select.addEventListener("change", () => {
      const v = select.value;
      setOrDelete(target, name, schema.type === "boolean" && (v === "true" || v === "false") ? v === "true" : v);
      changed();
    });
    return field(name, withPicker(select, stepIndex, null), help, required);
  }
  const shown = value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value);
  const input = h("input", { id, "data-path": path, value: shown, placeholder: schema.default != null ? String(schema.default) : "", autocomplete: "off" });
  const parse = (text) => {
    const t = text.trim();
    if (t === "") return undefined;
    if (schema.type === "integer" || schema.type === "number") return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : text;
    if (schema.type === "array") {
      if (t.startsWith("[")) { try { return JSON.parse(t); } catch (_) { return text; } }
      return [text];
    }
    if (schema.type === "object" && t.startsWith("{") && !t.startsWith("{{")) { try { return JSON.parse(t); } catch (_) { return text; } }
    return text;
  };
  return field(name, withPicker(input, stepIndex, (v) => setOrDelete(target, name, parse(v))), help, required);
}

// A control with a "pick a value" button: the picker writes `{{ path }}` into it.
function withPicker(control, stepIndex, onValue) {
  if (onValue) control.addEventListener("input", () => { onValue(control.value); changed(); });
  const button = h("button", { class: "small pick editor-only", title: "Use a value from the event or an earlier step", "aria-label": "Pick a value for " + (control.id || "field") }, "{ } value");
  button.addEventListener("click", (event) => { event.preventDefault(); openPicker(button, control, stepIndex); });
  return h("div", { class: "control" }, control, button);
}

function dataEntries() {
  const topic = S.doc && S.doc.trigger ? catalogueTopic(S.doc.trigger.topic) : null;
  if (topic) return topic.fields;
  const found = [];
  const walk = (value, prefix, depth) => {
    if (value && typeof value === "object" && !Array.isArray(value) && depth < 3) {
      for (const [key, inner] of Object.entries(value)) {
        const path = `${prefix}.${key}`;
        found.push({ path, type: Array.isArray(inner) ? "array" : typeof inner });
        walk(inner, path, depth + 1);
      }
    }
  };
  walk(S.sampleData, "data", 0);
  return found;
}

function pickerEntries(stepIndex) {
  const groups = [];
  const data = dataEntries();
  groups.push(["The trigger's data", data.length ? data : [{ path: "data", type: "object", description: "paste a sample in Test to list its fields" }]]);
  const steps = S.doc.steps.slice(0, stepIndex === null || stepIndex === undefined ? 0 : stepIndex);
  for (const step of steps) {
    const spec = step.command && actionSpec(step.command);
    if (!spec || !step.id) continue;
    groups.push([`Step ${step.id} (${step.command})`, spec.result_fields.map((f) => ({ ...f, path: `steps.${step.id}.${f.path}` }))]);
  }
  groups.push(["The event", S.catalogue.event_fields.map((path) => ({ path, type: "" }))]);
  groups.push(["Settings", S.catalogue.settings.map((path) => ({ path, type: "" }))]);
  return groups;
}

function openPicker(anchor, control, stepIndex) {
  const picker = $("picker");
  const filter = $("picker-filter");
  const render = () => {
    const needle = filter.value.trim().toLowerCase();
    const items = [];
    for (const [group, entries] of pickerEntries(stepIndex)) {
      const hits = entries.filter((e) => !needle || e.path.toLowerCase().includes(needle));
      if (!hits.length) continue;
      items.push(h("li", { class: "group" }, group));
      for (const entry of hits) {
        items.push(h("li", { "data-value": entry.path, title: entry.description || "", onclick: () => choose(entry.path) },
          entry.path, entry.type ? h("small", {}, entry.type) : null));
      }
    }
    $("picker-list").replaceChildren(...items);
  };
  const choose = (path) => {
    const text = `{{ ${path} }}`;
    if (control.tagName === "SELECT") {
      if (![...control.options].some((o) => o.value === text)) control.append(h("option", { value: text }, text));
      control.value = text;
      control.dispatchEvent(new Event("change"));
    } else {
      const startAt = control.selectionStart ?? control.value.length;
      const endAt = control.selectionEnd ?? control.value.length;
      control.value = control.value.slice(0, startAt) + text + control.value.slice(endAt);
      control.dispatchEvent(new Event("input"));
    }
    closePicker();
    control.focus();
  };
  filter.value = "";
  filter.oninput = render;
  render();
  const box = anchor.getBoundingClientRect();
  picker.style.top = window.scrollY + box.bottom + 4 + "px";
  picker.style.left = Math.max(8, window.scrollX + box.right - 420) + "px";
  picker.hidden = false;
  filter.focus();
}

function closePicker() { $("picker").hidden = true; }
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closePicker(); });
document.addEventListener("mousedown", (e) => {
  if (!$("picker").hidden && !$("picker").contains(e.target) && !e.target.classList.contains("pick")) closePicker();
});

// --- validation, save, enable ---------------------------------------------------------------

let validateTimer = null;
let validateRound = 0;

function validateSoon(delay = 250) {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validate, delay);
}

async function validate() {
  const round = ++validateRound;
  const answer = await api("POST", "/studio/api/validate", { recipe: S.doc });
  if (round !== validateRound || !answer.ok) return;
  S.problems = answer.body.problems;
  renderProblems();
}

function renderProblems() {
  const builder = $("tab-builder");
  for (const node of builder.querySelectorAll(".problem.inline")) node.remove();
  for (const node of builder.querySelectorAll(".invalid")) node.classList.remove("invalid");
  const loose = [];
  for (const problem of S.problems) {
    let path = problem.field;
    let target = null;
    while (path && !(target = builder.querySelector(`[data-path="${CSS.escape(path)}"]`))) {
      const parent = path.match(/^(.*?)(\.[^.[\]]+|\[\d+\])$/);
      path = parent ? parent[1] : "";
    }
    if (!target || target.closest("details:not([open])")) { loose.push(problem); continue; }
    target.classList.add("invalid");
    const holder = target.closest(".field") || target.parentElement;
    holder.append(h("p", { class: "problem inline", role: "alert" }, (path === problem.field ? "" : problem.field + ": ") + problem.message));
  }
  $("problems").replaceChildren(...loose.map((p) => h("li", {}, (p.field ? p.field + ": " : "") + p.message)));
  const chip = $("validity");
  chip.textContent = S.problems.length ? `${S.problems.length} problem${S.problems.length > 1 ? "s" : ""}` : "valid";
  chip.className = "chip " + (S.problems.length ? "bad" : "ok");
}

function renderToggle() {
  const button = $("toggle-enabled");
  button.textContent = S.doc.enabled ? "Disable" : "Enable";
  button.disabled = !isEditor() || !S.savedName;
  button.title = S.savedName ? "" : "Save the recipe first";
}

$("save").addEventListener("click", async () => {
  const name = S.doc.name;
  if (!name) { S.problems = [{ field: "name", message: "give the recipe a name" }]; return renderProblems(); }
  const answer = await api("PUT", "/studio/api/recipes/" + encodeURIComponent(name), { recipe: S.doc, base_version: S.baseVersion });
  if (!answer.ok) {
    if (answer.body && answer.body.problems) { S.problems = answer.body.problems; renderProblems(); }
    return banner("Not saved: " + explain(answer));
  }
  S.baseVersion = answer.body.version;
  S.savedName = name;
  S.dirty = false;
  $("f-name").disabled = true;
  $("builder-title").textContent = `${name} (version ${S.baseVersion})`;
  renderToggle();
  banner(`Saved ${name}, version ${S.baseVersion}` + (S.doc.enabled ? "; workers pick it up within seconds." : "; enable it to run it."), true);
  loadGallery();
});

$("toggle-enabled").addEventListener("click", async () => {
  if (S.dirty) return banner("Save your changes first.");
  const verb = S.doc.enabled ? "disable" : "enable";
  const answer = await api("POST", `/studio/api/recipes/${encodeURIComponent(S.savedName)}/${verb}`, { base_version: S.baseVersion });
  if (!answer.ok) return banner(explain(answer));
  S.baseVersion = answer.body.version;
  S.doc.enabled = answer.body.enabled;
  $("builder-title").textContent = `${S.savedName} (version ${S.baseVersion})`;
  renderToggle();
  banner(`${S.savedName} ${verb}d (version ${S.baseVersion}).`, true);
  loadGallery();
});

$("show-yaml").addEventListener("click", async () => {
  const pre = $("yaml");
  if (!pre.hidden) { pre.hidden = true; return; }
  const answer = await api("POST", "/studio/api/yaml", { recipe: S.doc });
  pre.textContent = answer.ok ? answer.text : explain(answer);
  pre.hidden = false;
});

// --- test -----------------------------------------------------------------------------------

function prepareTest() {
  const trigger = S.doc.trigger || {};
  if (!$("sample-type").value && trigger.type) $("sample-type").value = trigger.type;
  if (!$("sample").value.trim() && S.sampleData !== null) $("sample").value = JSON.stringify(S.sampleData, null, 2);
  $("samples-note").textContent = trigger.topic ? "from " + trigger.topic : "the recipe has no trigger topic";
  // Each command step gets an assumed result (an id) unless the user wrote one.
  let assumed;
  try { assumed = JSON.parse($("assumed").value || "{}"); } catch (_) { return; /* the user's to fix */ }
  S.doc.steps.forEach((step, index) => {
    if (!step.command || !step.id || step.id in assumed) return;
    assumed[step.id] = step.command === "search-actors" || step.command === "link-actor-to-processing" ? [] : { id: 1001 + index };
  });
  $("assumed").value = JSON.stringify(assumed);
}

$("sample").addEventListener("input", () => {
  try { S.sampleData = JSON.parse($("sample").value); } catch (_) { /* still typing */ }
});

$("load-samples").addEventListener("click", async () => {
  const trigger = S.doc.trigger || {};
  if (!trigger.topic) return;
  const query = new URLSearchParams({ topic: trigger.topic, limit: "5" });
  if (trigger.type) query.set("type", trigger.type);
  const answer = await api("GET", "/studio/api/samples?" + query);
  if (!answer.ok) { $("samples-note").textContent = explain(answer); return; }
  const samples = answer.body.samples;
  $("samples-note").textContent = samples.length ? `${samples.length} latest on ${trigger.topic} (as the topic holds them)` : `nothing on ${trigger.topic} yet`;
  $("samples").replaceChildren(...samples.map((sample) => h("button", {
    class: "sample",
    onclick: () => {
      $("sample").value = JSON.stringify(sample.data, null, 2);
      $("sample-type").value = sample.type || "";
      $("sample-key").value = sample.key || "";
      S.sampleData = sample.data;
    },
  }, `${sample.time || ""} · ${sample.type || "no type"} · key ${sample.key || "—"} · offset ${sample.partition}:${sample.offset}`)));
});

function readSample() {
  let data;
  let results = {};
  try { data = JSON.parse($("sample").value || "null"); } catch (error) { throw new Error("the event data is not JSON: " + error.message); }
  try { results = JSON.parse($("assumed").value || "{}"); } catch (error) { throw new Error("the step results are not JSON: " + error.message); }
  const event = { data, results };
  if ($("sample-type").value.trim()) event.type = $("sample-type").value.trim();
  if ($("sample-key").value.trim()) event.key = $("sample-key").value.trim();
  return event;
}

$("run-test").addEventListener("click", async () => {
  const out = $("test-output");
  let event;
  try { event = readSample(); } catch (error) { return out.replaceChildren(h("p", { class: "problem" }, error.message)); }
  const answer = await api("POST", "/studio/api/dry-run", { recipe: S.doc, event });
  if (!answer.ok) return out.replaceChildren(h("div", { class: "out" }, h("p", { class: "problem" }, "The recipe is not valid yet: " + explain(answer))));
  const result = answer.body;
  const parts = [h("p", { id: "test-verdict", class: result.matches ? "" : "note" },
    result.matches ? `The recipe takes this event: ${result.commands.length} command(s), ${result.messages.length} message(s), nothing sent.` : "The filter does not take this event: nothing would be sent.")];
  for (const command of result.commands) {
    parts.push(h("div", { class: "out command", "data-step": command.step },
      h("b", {}, `Step ${command.step}: ${command.action}`), " → ", h("code", {}, command.topic),
      h("div", { class: "note" }, "command id ", h("code", {}, command.command_id)),
      h("pre", {}, JSON.stringify(command.data, null, 2))));
  }
  for (const message of result.messages) {
    parts.push(h("div", { class: "out message", "data-step": message.step },
      h("b", {}, `Step ${message.step}: message`), " → ", h("code", {}, message.topic), " ", message.type || "",
      h("pre", {}, JSON.stringify(message.data, null, 2))));
  }
  if (result.problems.length) {
    parts.push(h("ul", { class: "problems", id: "test-problems" }, ...result.problems.map((p) => h("li", {}, `${p.field}: ${p.message}`))));
  }
  out.replaceChildren(...parts);
});

$("send-once").addEventListener("click", async () => {
  const note = $("send-note");
  if (!S.savedName || S.dirty) { note.textContent = "Save the recipe first: send once runs the saved version."; return; }
  let event;
  try { event = readSample(); } catch (error) { note.textContent = error.message; return; }
  delete event.results;
  const answer = await api("POST", `/studio/api/recipes/${encodeURIComponent(S.savedName)}/send-once`, { event });
  note.textContent = answer.ok ? `Sent once: run ${answer.body.run_key}. Follow it in History.` : "Not sent: " + explain(answer);
});

// --- history --------------------------------------------------------------------------------

$("history-refresh").addEventListener("click", loadRuns);
$("history-recipe").addEventListener("change", loadRuns);
$("history-status").addEventListener("change", loadRuns);

async function loadRuns() {
  const query = new URLSearchParams({ limit: "100" });
  if ($("history-recipe").value) query.set("recipe", $("history-recipe").value);
  if ($("history-status").value) query.set("status", $("history-status").value);
  const answer = await api("GET", "/studio/api/runs?" + query);
  if (!answer.ok) { $("history-note").textContent = explain(answer); return; }
  const runs = answer.body.runs;
  $("history-note").textContent = `${runs.length} run(s) · refreshed ${new Date().toLocaleTimeString()}`;
  const rows = [];
  for (const run of runs) {
    const key = run.recipe + ":" + run.run_key;
    const trigger = run.trigger || {};
    const open = S.expanded.has(key);
    rows.push(h("tr", { class: "run", "data-recipe": run.recipe, "data-status": run.status },
      h("td", {}, run.started_at ? new Date(run.started_at).toLocaleString() : ""),
      h("td", {}, run.recipe),
      h("td", { class: "status-" + run.status }, run.status, run.retry_of ? h("div", { class: "note" }, "retry") : null),
      h("td", { class: "mono" }, trigger.topic ? `${trigger.topic} ${trigger.partition}:${trigger.offset}` : trigger.event_id || "schedule"),
      h("td", {}, (run.steps || []).map((s) => `${s.id} ${s.status === "succeeded" ? "✓" : s.status === "failed" ? "✗" : "–"}`).join("  ")),
      h("td", {}, h("button", { class: "small", onclick: () => { open ? S.expanded.delete(key) : S.expanded.add(key); loadRuns(); } }, open ? "Hide" : "Details"))));
    if (open) rows.push(h("tr", { class: "detail" }, h("td", { colspan: 6 }, runDetail(run))));
  }
  $("runs").replaceChildren(...rows);
  lockForReaders();
}

function runDetail(run) {
  const parts = [h("div", { class: "note" }, "run key ", h("code", {}, run.run_key), run.retry_of ? [" · retry of ", h("code", {}, run.retry_of)] : null)];
  const outcomes = runOutcomes(run);
  for (const step of run.steps || []) {
    parts.push(h("div", { class: "step-result", "data-step": step.id },
      h("b", {}, step.id), " ", h("span", { class: "status-" + step.status }, step.status),
      step.error ? h("div", { class: "problem" }, `${step.error.kind}: ${step.error.message}`) : null,
      (step.command_ids || []).map((id) => commandLine(id, outcomes))));
  }
  if (run.error) parts.push(h("p", { class: "problem" }, `Failed at step ${run.error.step || "?"} (${run.error.kind}): ${run.error.message}`, run.error.command_id ? [" · command ", h("code", {}, run.error.command_id)] : null));
  if (run.status === "failed") {
    parts.push(h("button", {
      class: "editor-only retry",
      onclick: async (event) => {
        const answer = await api("POST", "/studio/api/runs/retry", { recipe: run.recipe, run_key: run.run_key });
        event.target.replaceWith(h("span", { class: "note" }, answer.ok ? `Retrying as run ${answer.body.run_key}.` : "Not retried: " + explain(answer)));
      },
    }, "Retry from the failed step"));
  }
  return parts;
}

// What each command of a run did (its result's ids and status, a failure's reason and dead
// letter), fetched once per version of the run and drawn by the next refresh.
function runOutcomes(run) {
  const key = `${run.recipe}:${run.run_key}@${run.updated_at}`;
  if (S.outcomes.has(key)) return S.outcomes.get(key);
  S.outcomes.set(key, null);
  const query = new URLSearchParams({ recipe: run.recipe, run_key: run.run_key });
  api("GET", "/studio/api/runs/commands?" + query).then((answer) => {
    S.outcomes.set(key, answer.ok ? Object.fromEntries(answer.body.commands.map((c) => [c.command_id, c])) : { error: explain(answer) });
    loadRuns();
  });
  return null;
}

function commandLine(id, outcomes) {
  const line = h("div", { class: "result command-outcome", "data-command": id }, "command ", h("code", {}, id));
  if (outcomes === null) { line.append(" · reading its result…"); return line; }
  if (outcomes.error) { line.append(" · " + outcomes.error); return line; }
  const outcome = outcomes[id];
  if (!outcome || !outcome.status) { line.append(" · no result yet"); return line; }
  const ids = outcome.result_ids.map((x) => h("code", {}, String(x)));
  line.append(h("span", {}, " · ", h("span", { class: "status-" + outcome.status }, outcome.status),
    ids.length ? [" → id ", ...ids] : null, ` · ${outcome.attempts} attempt(s)`));
  const error = outcome.error;
  if (error) {
    line.append(h("div", { class: "problem" }, `${error.kind}${error.status ? " (HTTP " + error.status + ")" : ""}: ${error.message}`,
      error.fields.length ? " · fields: " + error.fields.join(", ") : ""));
  }
  const dead = outcome.dead_letter;
  if (dead) {
    line.append(h("div", { class: "problem dead-letter" }, `Dead letter (${dead.component}, ${dead.attempts} attempt(s)): ${dead.kind}: ${dead.message}`));
  }
  return line;
}

// --- start ----------------------------------------------------------------------------------

(async () => {
  // A sign-in link (`make run` prints one) carries the token in the fragment, which is never
  // sent to a server; it is kept in this tab and taken out of the address bar.
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    S.token = given;
    sessionStorage.setItem("studio-token", given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (!S.token) return signIn();
  const answer = await api("GET", "/studio/api/catalogue", undefined, { signingIn: true });
  if (!answer.ok) return signIn(answer.status === 401 ? "Sign in with a studio token." : explain(answer));
  start(answer.body);
})();
