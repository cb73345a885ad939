// grm-server judgment inspector: plain JS, no dependencies. Every text from the caller or the model goes in
// through textContent (never innerHTML), so a response or a critique can never become markup.
"use strict";

// ---------- small DOM helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const ordinal = (i) => `${i + 1}${["st", "nd", "rd"][((((i + 1) + 90) % 100 - 10) % 10) - 1] || "th"}`;
const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits).replace(/\.?0+$/, ""));
const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

// ---------- voting, as the server does it (used for evaluation runs, whose records hold no rewards) ----------

/** Indices of the k_meta highest meta rewards among `valid` (ties: earlier first), as voting.select_top. */
function selectTop(metaRewards, kMeta) {
  const ranked = metaRewards.map((r, i) => i).sort((a, b) => metaRewards[b] - metaRewards[a] || a - b);
  return new Set(ranked.slice(0, kMeta));
}

/** Mark each sample kept or dropped and vote: rewards = per-response sums of kept scores. */
function voteSamples(samples, n, kMeta) {
  const valid = samples.map((s, i) => i).filter((i) => Array.isArray(samples[i].scores));
  let kept = new Set(valid);
  const metas = valid.map((i) => samples[i].meta_reward);
  if (kMeta > 0 && metas.length && metas.every((m) => typeof m === "number")) {
    const top = selectTop(metas, kMeta);
    kept = new Set(valid.filter((_, j) => top.has(j)));
  }
  const rewards = new Array(n).fill(0);
  for (const i of kept) samples[i].scores.forEach((s, r) => (rewards[r] += s));
  const out = samples.map((s, i) => ({ ...s, kept: kept.has(i) }));
  return { samples: out, rewards: kept.size ? rewards : null, kept: kept.size, valid: valid.length };
}

/** 'right' (label strictly on top), 'tie' (label among the tied top), 'wrong' (else, or no valid judgment). */
function outcome(rewards, label) {
  if (!rewards) return "wrong";
  const top = Math.max(...rewards);
  if (rewards[label] !== top) return "wrong";
  return rewards.filter((r) => r === top).length > 1 ? "tie" : "right";
}

// ---------- shared renderers: bars, position table, judgment cards ----------

/** Bars of the voted reward and the mean score per response; the best one marked. */
function renderBars({ rewards, scores, best, kept, names, label }) {
  const maxReward = Math.max(10 * Math.max(kept, 1), ...rewards);
  const list = el("ol", { class: "bars", "aria-label": "Voted rewards and mean scores per response" });
  rewards.forEach((reward, i) => {
    const isBest = i === best;
    const tags = [];
    if (isBest) tags.push(el("span", { class: "tag best-tag", text: "★ best" }));
    if (label === i) tags.push(el("span", { class: "tag label-tag", text: "labelled best" }));
    const rewardBar = el("span", { class: "bar reward" });
    rewardBar.style.width = `${(100 * reward) / maxReward}%`;
    const meanBar = el("span", { class: "bar mean" });
    meanBar.style.width = `${(100 * (scores[i] || 0)) / 10}%`;
    list.append(
      el(
        "li",
        { class: isBest ? "bar-row best" : "bar-row", "data-index": i },
        el("div", { class: "bar-name" }, el("strong", { text: `#${i}` }), " ", el("span", { class: "snippet", text: names[i] || "" }), ...tags.flatMap((t) => [" ", t])),
        el("div", { class: "bar-line" }, el("span", { class: "bar-label", text: "reward" }), el("span", { class: "track" }, rewardBar), el("span", { class: "bar-value reward-value", text: `${reward} / ${maxReward}` })),
        el("div", { class: "bar-line" }, el("span", { class: "bar-label", text: "mean" }), el("span", { class: "track" }, meanBar), el("span", { class: "bar-value mean-value", text: `${fmt(scores[i])} / 10` })),
      ),
    );
  });
  return list;
}

/** Mean score of each response by the position it was shown at (valid judgments only). */
function renderPositionTable(samples, n) {
  const sum = Array.from({ length: n }, () => new Array(n).fill(0));
  const count = Array.from({ length: n }, () => new Array(n).fill(0));
  for (const s of samples) {
    if (!Array.isArray(s.scores)) continue;
    s.order.forEach((caller, pos) => {
      sum[caller][pos] += s.scores[caller];
      count[caller][pos] += 1;
    });
  }
  const head = el("tr", {}, el("th", { scope: "col", text: "response" }), ...Array.from({ length: n }, (_, p) => el("th", { scope: "col", text: `shown ${ordinal(p)}` })));
  const rows = sum.map((row, caller) =>
    el("tr", {}, el("th", { scope: "row", text: `#${caller}` }), ...row.map((s, p) => el("td", { text: count[caller][p] ? `${fmt(s / count[caller][p])} (${count[caller][p]}×)` : "–" }))),
  );
  const colMean = (p) => {
    let s = 0, c = 0;
    for (let r = 0; r < n; r++) { s += sum[r][p]; c += count[r][p]; }
    return c ? fmt(s / c) : "–";
  };
  const foot = el("tr", { class: "all" }, el("th", { scope: "row", text: "any" }), ...Array.from({ length: n }, (_, p) => el("td", { text: colMean(p) })));
  return el(
    "table",
    { class: "positions" },
    el("caption", { text: "Mean score by position shown (times shown); without position bias a row is flat" }),
    el("thead", {}, head),
    el("tbody", {}, rows, foot),
  );
}

function textBlock(title, text) {
  if (text === undefined || text === null) return null;
  return el("div", { class: "block" }, el("h4", { text: title }), el("p", { class: "pre", text: text || "(empty)" }));
}

/** One judgment: the order it was shown in, principles, critique, scores in the caller's order, meta, validity. */
function renderCard(sample, index, { label } = {}) {
  const valid = Array.isArray(sample.scores);
  const badges = [
    el("span", { class: sample.kept ? "tag kept" : "tag dropped", text: sample.kept ? "kept" : "dropped" }),
    el("span", { class: valid ? "tag ok" : "tag bad", text: valid ? "valid" : "unparseable" }),
  ];
  if (sample.meta_reward !== null && sample.meta_reward !== undefined) {
    badges.push(el("span", { class: "tag meta", text: `meta ${fmt(sample.meta_reward, 3)}` }));
  }
  if (sample.completed !== undefined && sample.completed !== null) {
    badges.push(el("span", { class: sample.completed ? "tag ok" : "tag bad", text: sample.completed ? "completed" : "cut off" }));
  }
  if (sample.finish_reason) badges.push(el("span", { class: "tag", text: `finish: ${sample.finish_reason}` }));

  const shown = el("p", { class: "order" }, "shown: ", sample.order.map((caller, pos) => `${ordinal(pos)} #${caller}`).join(" · "));
  const scoreRows = sample.order
    .map((_, caller) => caller)
    .map((caller) =>
      el(
        "tr",
        { class: label === caller ? "labelled" : null },
        el("th", { scope: "row", text: `#${caller}` }),
        el("td", { class: "score", text: valid ? String(sample.scores[caller]) : "–" }),
        el("td", { text: `shown ${ordinal(sample.order.indexOf(caller))}` }),
      ),
    );
  const scores = el(
    "table",
    { class: "card-scores" },
    el("caption", { text: "scores in your order" }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "response" }), el("th", { scope: "col", text: "score" }), el("th", { scope: "col", text: "position" }))),
    el("tbody", {}, scoreRows),
  );
  const raw = sample.text
    ? el("details", {}, el("summary", { text: "full judgment text" }), el("p", { class: "pre", text: sample.text }))
    : null;
  return el(
    "article",
    { class: `card ${sample.kept ? "is-kept" : "is-dropped"} ${valid ? "" : "is-invalid"}`, "aria-label": `Judgment ${index + 1}` },
    el("header", {}, el("h3", { text: `Judgment ${index + 1}` }), el("div", { class: "badges" }, badges.flatMap((b) => [b, " "]))),
    shown,
    scores,
    sample.error ? el("p", { class: "parse-error" }, el("strong", { text: "parse error: " }), el("span", { text: sample.error })) : null,
    textBlock("Principles", sample.principles),
    textBlock("Critique", sample.critique),
    raw,
  );
}

function renderCards(samples, opts) {
  return el("div", { class: "cards" }, samples.map((s, i) => renderCard(s, i, opts)));
}

// ---------- errors ----------

/** A readable line from a failed response: the API's {"error": {message, type, param, code}} when present. */
async function describeFailure(response) {
  const text = await response.text();
  let err = null;
  try {
    err = JSON.parse(text).error;
  } catch (_) {
    /* not JSON */
  }
  if (!err || typeof err !== "object") return { title: `HTTP ${response.status}`, detail: clip(text, 500), fields: [] };
  const fields = [];
  if (err.type) fields.push(["type", err.type]);
  if (err.param) fields.push(["param", err.param]);
  if (err.code) fields.push(["code", err.code]);
  const rid = (response.headers.get("x-request-id") || "").split(",")[0].trim();
  if (rid) fields.push(["request id", rid]);
  let detail = String(err.message || "");
  if (response.status === 401) detail += " — enter the server's API key in the API key field and score again.";
  return { title: `HTTP ${response.status}`, detail, fields };
}

function showError(box, { title, detail, fields }) {
  box.replaceChildren(
    el("h2", { text: `Error: ${title}` }),
    el("p", { class: "error-message", text: detail }),
    fields.length ? el("dl", {}, fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])) : null,
  );
  box.hidden = false;
  box.focus();
}

// ---------- the score form ----------

const ROLES = ["user", "assistant", "system"];

function renumber(list, noun) {
  const items = [...list.children];
  items.forEach((li, i) => {
    li.querySelector(".row-name").textContent = `${noun} ${noun === "Response" ? `#${i}` : i + 1}`;
    const remove = li.querySelector(".remove");
    remove.disabled = items.length === 1;
    remove.setAttribute("aria-label", `Remove ${noun.toLowerCase()} ${noun === "Response" ? `#${i}` : i + 1}`);
  });
}

/** Remove a row and keep the keyboard focus nearby (the previous row's text, else the next, else Add). */
function removeRow(li, noun, addId) {
  const list = li.parentElement;
  const near = li.previousElementSibling || li.nextElementSibling;
  li.remove();
  renumber(list, noun);
  (near ? near.querySelector("textarea") : $(addId)).focus();
}

function addTurn(role = "user", content = "") {
  const list = $("turns");
  const id = `turn-${Date.now()}-${Math.random().toString(36).slice(2, 7)}`;
  const select = el("select", { class: "role", id: `${id}-role` }, ROLES.map((r) => el("option", { value: r, text: r })));
  select.value = role;
  const area = el("textarea", { class: "content", id: `${id}-text`, rows: 3, required: true });
  area.value = content;
  const li = el(
    "li",
    {},
    el("div", { class: "row-head" },
      el("label", { for: `${id}-text`, class: "row-name" }),
      el("label", { class: "role-label", for: `${id}-role`, text: "role" }), select,
      el("button", { type: "button", class: "remove", onclick: () => removeRow(li, "Turn", "add-turn") }, "Remove")),
    area,
  );
  list.append(li);
  renumber(list, "Turn");
  return area;
}

function addResponse(content = "") {
  const list = $("responses");
  const id = `resp-${Date.now()}-${Math.random().toString(36).slice(2, 7)}`;
  const area = el("textarea", { class: "content", id, rows: 3 });
  area.value = content;
  const li = el(
    "li",
    {},
    el("div", { class: "row-head" },
      el("label", { for: id, class: "row-name" }),
      el("button", { type: "button", class: "remove", onclick: () => removeRow(li, "Response", "add-response") }, "Remove")),
    area,
  );
  list.append(li);
  renumber(list, "Response");
  return area;
}

/** The /score body from the form; empty parameters are left out (the server's defaults apply). */
function buildBody() {
  const turns = [...$("turns").children].map((li) => ({ role: li.querySelector(".role").value, content: li.querySelector(".content").value }));
  const responses = [...$("responses").children].map((li) => li.querySelector(".content").value);
  const body = turns.length === 1 && turns[0].role === "user" ? { query: turns[0].content } : { messages: turns };
  body.responses = responses;
  for (const name of ["k", "k_meta", "temperature", "max_tokens", "seed"]) {
    const raw = $(`p-${name}`).value.trim();
    if (raw !== "") body[name] = Number(raw);
  }
  body.return_samples = true;
  return body;
}

let inFlight = null;

async function submitScore(event) {
  event.preventDefault();
  if (inFlight) return;
  const body = buildBody();
  const headers = { "content-type": "application/json" };
  const key = $("p-key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  const errorBox = $("score-error");
  const result = $("score-result");
  errorBox.hidden = true;
  result.setAttribute("aria-busy", "true");
  const controller = new AbortController();
  inFlight = controller;
  const started = performance.now();
  const status = $("status");
  const tick = () => (status.textContent = `Scoring… ${((performance.now() - started) / 1000).toFixed(0)} s`);
  tick();
  const timer = setInterval(tick, 1000);
  $("submit").disabled = true;
  $("cancel").hidden = false;
  try {
    const response = await fetch("score", { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      result.hidden = true;
      showError(errorBox, await describeFailure(response));
      status.textContent = `Failed (HTTP ${response.status}).`;
      return;
    }
    const data = await response.json();
    status.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
    renderScore(result, data, body.responses);
  } catch (exc) {
    result.hidden = true;
    const aborted = exc && exc.name === "AbortError";
    showError(errorBox, {
      title: aborted ? "cancelled" : "no answer",
      detail: aborted ? "Cancelled; the server aborts the judgments of a request whose client went away." : `Could not reach the server: ${exc}`,
      fields: [],
    });
    status.textContent = aborted ? "Cancelled." : "Failed.";
  } finally {
    clearInterval(timer);
    inFlight = null;
    $("submit").disabled = false;
    $("cancel").hidden = true;
    result.removeAttribute("aria-busy");
  }
}

function summaryList(pairs) {
  return el("dl", { class: "summary" }, pairs.filter(([, v]) => v !== undefined && v !== null).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function renderScore(container, data, responses) {
  const n = data.rewards.length;
  const samples = data.samples || [];
  const top = Math.max(...data.rewards);
  const tied = data.rewards.map((r, i) => i).filter((i) => data.rewards[i] === top && i !== data.best);
  const tie = tied.length ? ` (tied with ${tied.map((i) => `#${i}`).join(", ")} on ${top}; the seed broke the tie)` : "";
  const heading = el("h2", { tabindex: "-1", id: "result-heading", text: `Result: response #${data.best} is best${tie}` });
  const u = data.usage || {};
  container.replaceChildren(
    heading,
    summaryList([
      ["model", data.model],
      ["k", data.k],
      ["k_meta", data.k_meta === 0 ? "0 (plain voting)" : data.k_meta],
      ["valid", `${data.valid} of ${samples.length || data.k}`],
      ["kept", data.kept],
      ["seed", data.seed],
      ["tokens", `${u.prompt_tokens} prompt + ${u.completion_tokens} completion (${u.cached_tokens} cached), ${u.engine_calls} engine calls`],
      ["request id", data.id],
    ]),
    el("h3", { text: "Vote" }),
    renderBars({ rewards: data.rewards, scores: data.scores, best: data.best, kept: data.kept, names: responses.map((r) => clip(r, 90)) }),
    n > 1 && samples.length ? renderPositionTable(samples, n) : null,
    el("h3", { text: `Judgments (${samples.length})` }),
    renderCards(samples),
  );
  container.hidden = false;
  heading.focus();
}

function loadExample() {
  $("turns").replaceChildren();
  $("responses").replaceChildren();
  addTurn("user", "What is the boiling point of water at sea level?");
  addResponse("100 degrees Celsius (212 °F).");
  addResponse("About 50 degrees Celsius.");
}

// ---------- evaluation runs (items.jsonl of `grm-server eval`) ----------

const RANK = { error: 0, wrong: 1, tie: 2, right: 3 };
const evalRun = { records: [], items: [], name: "", bad: 0 };

/** Whether every valid sampled judgment of a record carries a meta reward (a run with a Meta RM). */
function hasMeta(record) {
  const valid = ((record.sampled || {}).samples || []).filter((s) => Array.isArray(s.scores));
  return valid.length > 0 && valid.every((s) => typeof s.meta_reward === "number");
}

/** One record voted by `method`: Voting@k_max (every valid judgment) or MetaRM@k_max (the top k_meta). */
function prepareRecord({ record, line }, method) {
  const part = record.sampled || {};
  const base = { record, line, key: record.key || `line ${line}` };
  const kMeta = method === "metarm" && hasMeta(record) ? Math.max(1, part.k_meta || Math.floor((part.k || 2) / 2)) : 0;
  const name = `${kMeta ? "MetaRM" : "Voting"}@${part.k} ${kMeta ? `(k_meta=${kMeta})` : ""}`.trim();
  if (part.error) return { ...base, method: name, status: "error", voted: null, greedy: null };
  const voted = voteSamples(part.samples || [], record.n, kMeta);
  const greedy = record.greedy && !record.greedy.error ? voteSamples(record.greedy.samples || [], record.n, 0) : null;
  return { ...base, method: name, status: outcome(voted.rewards, record.label), voted, greedy: greedy ? outcome(greedy.rewards, record.label) : null };
}

function parseRecords(text) {
  const records = [];
  let bad = 0;
  text.split("\n").forEach((raw, i) => {
    if (!raw.trim()) return;
    try {
      const record = JSON.parse(raw);
      if (typeof record !== "object" || record === null || typeof record.n !== "number" || typeof record.label !== "number") throw new Error("not a record");
      records.push({ record, line: i + 1 });
    } catch (_) {
      bad += 1;
    }
  });
  return { records, bad };
}

/** Vote every record with the chosen method; wrong (and failed) ones first, then ties, then right. */
function rankItems() {
  const method = $("eval-method").value;
  evalRun.items = evalRun.records.map((r) => prepareRecord(r, method));
  evalRun.items.sort((a, b) => RANK[a.status] - RANK[b.status] || a.line - b.line);
  const counts = { error: 0, wrong: 0, tie: 0, right: 0 };
  for (const it of evalRun.items) counts[it.status] += 1;
  $("eval-summary").textContent =
    `${evalRun.name}: ${evalRun.items.length} items by ${method === "metarm" ? "MetaRM@k" : "Voting@k"}: ` +
    `${counts.wrong} wrong, ${counts.tie} ties, ${counts.right} right` +
    (counts.error ? `, ${counts.error} failed` : "") + (evalRun.bad ? ` (${evalRun.bad} unreadable lines skipped)` : "") + ".";
  renderEvalList();
  $("eval-detail").replaceChildren(el("p", { class: "hint", text: "Choose an item to see its judgments." }));
}

function renderEvalList() {
  const filter = $("eval-filter").value;
  const list = $("eval-items");
  const shown = evalRun.items.filter((it) => filter === "all" || it.status === filter || (filter === "wrong" && it.status === "error"));
  list.replaceChildren(
    ...shown.map((item) =>
      el(
        "li",
        {},
        el(
          "button",
          { type: "button", class: `item-button status-${item.status}`, "data-key": item.key, onclick: (ev) => showEvalItem(item, ev.currentTarget) },
          el("span", { class: `tag status ${item.status}`, text: item.status }),
          " ",
          el("span", { class: "item-key", text: item.record.id || item.key }),
          el("span", { class: "item-meta", text: ` · ${item.record.source || ""} · n=${item.record.n}` }),
        ),
      ),
    ),
  );
  if (!shown.length) list.append(el("li", { class: "hint", text: "no items match" }));
}

function showEvalItem(item, button) {
  for (const b of document.querySelectorAll(".item-button[aria-current]")) b.removeAttribute("aria-current");
  if (button) button.setAttribute("aria-current", "true");
  const r = item.record;
  const detail = $("eval-detail");
  const heading = el("h2", { tabindex: "-1", text: `${r.id || item.key}: ${item.method} ${item.status}` });
  const parts = [
    heading,
    summaryList([
      ["source", r.source],
      ["category", r.category],
      ["file", r.file],
      ["responses", r.n],
      ["labelled best", `#${r.label} (source index ${Array.isArray(r.perm) ? r.perm[r.label] : "?"})`],
      ["greedy (k=1)", item.greedy || (r.greedy ? "failed" : "not run")],
      ["seed", r.seed],
      ["elapsed", r.elapsed_s !== undefined ? `${r.elapsed_s} s` : null],
    ]),
    el("p", { class: "hint", text: "items.jsonl keeps scores, orders and meta rewards, not the texts: rerun the item on the Score tab to read its critiques." }),
  ];
  if (item.status === "error") {
    parts.push(el("p", { class: "parse-error" }, el("strong", { text: "request failed: " }), el("span", { text: JSON.stringify(r.sampled.error) })));
  } else {
    const v = item.voted;
    const rewards = v.rewards || new Array(r.n).fill(0);
    const scores = rewards.map((x) => (v.kept ? x / v.kept : 0));
    const top = Math.max(...rewards);
    const best = v.rewards && rewards.filter((x) => x === top).length === 1 ? rewards.indexOf(top) : -1;
    parts.push(
      el("h3", { text: `Vote (${item.method}${best < 0 && v.rewards ? "; tied at the top" : ""})` }),
      renderBars({ rewards, scores, best, kept: v.kept, names: [], label: r.label }),
      r.n > 1 ? renderPositionTable(v.samples, r.n) : null,
      el("h3", { text: `Judgments (${v.samples.length}; ${v.valid} valid, ${v.kept} kept)` }),
      renderCards(v.samples, { label: r.label }),
    );
  }
  detail.replaceChildren(...parts.filter(Boolean));
  heading.focus();
}

function loadEvalFile(file) {
  const errorBox = $("eval-error");
  errorBox.hidden = true;
  const reader = new FileReader();
  reader.onerror = () => showError(errorBox, { title: "unreadable file", detail: String(reader.error), fields: [] });
  reader.onload = () => {
    const { records, bad } = parseRecords(String(reader.result));
    Object.assign(evalRun, { records, bad, name: file.name });
    if (!records.length) {
      $("eval-body").hidden = true;
      $("eval-summary").textContent = "";
      showError(errorBox, { title: "no records", detail: `${file.name} holds no items.jsonl records of grm-server eval (${bad} unreadable lines).`, fields: [] });
      return;
    }
    const meta = $("eval-method").querySelector('option[value="metarm"]');
    meta.disabled = !records.some((r) => hasMeta(r.record));
    if (meta.disabled) $("eval-method").value = "voting";
    $("eval-body").hidden = false;
    rankItems();
  };
  reader.readAsText(file);
}

// ---------- wiring ----------

function showView(name) {
  for (const view of ["score", "eval"]) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).setAttribute("aria-pressed", String(view === name));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("tab-score").addEventListener("click", () => showView("score"));
  $("tab-eval").addEventListener("click", () => showView("eval"));
  $("add-turn").addEventListener("click", () => addTurn("user").focus());
  $("add-response").addEventListener("click", () => addResponse().focus());
  $("example").addEventListener("click", loadExample);
  $("score-form").addEventListener("submit", submitScore);
  $("cancel").addEventListener("click", () => inFlight && inFlight.abort());
  $("eval-file").addEventListener("change", (ev) => ev.target.files[0] && loadEvalFile(ev.target.files[0]));
  $("eval-filter").addEventListener("change", renderEvalList);
  $("eval-method").addEventListener("change", rankItems);
  addTurn("user");
  addResponse();
  addResponse();
  document.body.dataset.ready = "true";
});
