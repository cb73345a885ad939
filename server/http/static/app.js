// grm-server judgment inspector: wiring (loaded last; common.js, score.js and runs.js define what it wires).
"use strict";

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
