// grm-server judgment inspector, the Evaluation run tab: an items.jsonl of `grm-server eval`, read in the browser.
"use strict";

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
