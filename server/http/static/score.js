// grm-server judgment inspector, the Score tab: the form, POST /score with return_samples, the result.
"use strict";

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
