// grm-server judgment inspector, shared parts: DOM helpers, voting, the bars / position table / judgment cards,
// errors. Plain JS, no dependencies. Every text from the caller or the model goes in through textContent (never
// innerHTML), so a response or a critique can never become markup.
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

// ---------- layout ----------

function summaryList(pairs) {
  return el("dl", { class: "summary" }, pairs.filter(([, v]) => v !== undefined && v !== null).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}


function showView(name) {
  for (const view of ["score", "eval"]) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).setAttribute("aria-pressed", String(view === name));
  }
}
