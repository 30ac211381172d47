// The page's only script: reads the form (or the pasted record), asks /v1/predict, shows the answer.
// No library, nothing from the network but this server.
"use strict";
(function () {
  const form = document.getElementById("trial-form");
  const errorBox = document.getElementById("error");
  const result = document.getElementById("result");
  const button = document.getElementById("submit");

  fetch("/v1/health").then((r) => r.json()).then((h) => {
    const m = h.engine && h.engine.model;
    if (m) {
      const on = m.trained_on ? ` trained on ${m.trained_on.train_trials} trials` : "";
      document.getElementById("model-info").textContent = `Model: ${m.name}${on}.`;
    }
  }).catch(() => {});

  function lines(text) {
    return text.split("\n").map((s) => s.trim()).filter((s) => s.length > 0);
  }
  function list(text) {
    return text.split(";").map((s) => s.trim()).filter((s) => s.length > 0);
  }

  function body() {
    const record = document.getElementById("record").value.trim();
    if (record) {
      return record;
    }
    const v = (id) => document.getElementById(id).value;
    return JSON.stringify({
      title: v("title").trim(),
      phase: v("phase"),
      conditions: list(v("conditions")),
      drugs: list(v("drugs")),
      inclusion: lines(v("inclusion")),
      exclusion: lines(v("exclusion")),
    });
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    result.hidden = true;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function show(answer) {
    errorBox.hidden = true;
    document.getElementById("probability").textContent = `${(answer.probability * 100).toFixed(1)}%`;
    const m = answer.model || {};
    document.getElementById("result-model").textContent = `(${m.name || "model"}; not a guarantee: the model's PR-AUC on TOP is in the README)`;
    const tbody = document.querySelector("#similar tbody");
    tbody.replaceChildren();
    for (const h of answer.similar || []) {
      const row = document.createElement("tr");
      const idCell = document.createElement("td");
      if (h.url) {
        const a = document.createElement("a");
        a.href = h.url;
        a.textContent = h.id;
        a.rel = "noopener";
        idCell.appendChild(a);
      } else {
        idCell.textContent = h.id;
      }
      row.appendChild(idCell);
      cell(row, h.outcome || "unknown", h.outcome || "");
      cell(row, h.phase);
      cell(row, h.similarity.toFixed(3));
      cell(row, (h.conditions || []).join("; "));
      cell(row, (h.drugs || []).join("; "));
      tbody.appendChild(row);
    }
    result.hidden = false;
    document.getElementById("result-heading").focus();
  }

  async function submit(event) {
    if (event) event.preventDefault();
    button.disabled = true;
    try {
      const r = await fetch("/v1/predict?k=5", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: body(),
      });
      const answer = await r.json();
      if (!r.ok) {
        const e = answer.error || {};
        showError(e.field ? `${e.message}` : (e.message || `HTTP ${r.status}`));
      } else {
        show(answer);
      }
    } catch (e) {
      showError(`The server could not be reached: ${e}`);
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener("submit", submit);
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit(e);
  });
})();
