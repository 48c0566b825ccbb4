// sgs console: live fragments (polling with ETags), actions sent with fetch, logs on demand. No dependencies.
"use strict";

(function () {
  const body = document.body;
  const pollMs = Number(body.dataset.pollMs) || 2000;
  const etags = new Map();

  function notice(ok, message) {
    const box = document.getElementById("notice");
    if (!box) return;
    box.hidden = false;
    box.className = "notice " + (ok ? "ok" : "bad");
    box.textContent = message;
  }

  function busy(element) {
    const active = document.activeElement;
    return active && element.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  async function refresh(element) {
    const url = element.dataset.live;
    const headers = { Accept: "text/html" };
    const known = etags.get(url);
    if (known) headers["If-None-Match"] = known;
    let response;
    try {
      response = await fetch(url, { headers: headers, credentials: "same-origin", cache: "no-cache" });
    } catch (error) {
      element.dataset.stale = "true";  // the server is unreachable: the next poll tries again
      return;
    }
    if (response.status === 304) return;
    if (response.status === 401) { window.location.assign("/signin?next=" + encodeURIComponent(location.pathname)); return; }
    if (!response.ok) { element.dataset.stale = "true"; return; }
    const tag = response.headers.get("ETag");
    if (tag) etags.set(url, tag);
    const html = await response.text();
    if (!busy(element)) {
      element.innerHTML = html;
      delete element.dataset.stale;
    }
  }

  function refreshAll() {
    return Promise.all(Array.from(document.querySelectorAll("[data-live]")).map(refresh));
  }

  async function poll() {
    if (!document.hidden) await refreshAll();
    window.setTimeout(poll, pollMs);
  }

  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-action")) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": body.dataset.csrf || "" },
      });
      let answer = { ok: response.ok, message: response.statusText };
      try { answer = await response.json(); } catch (error) { /* not JSON: keep the status line */ }
      notice(answer.ok, answer.message);
      if (answer.ok && form.action.endsWith("/delete")) { window.location.assign("/runs"); return; }
      const other = form.dataset.thenShow && document.getElementById(form.dataset.thenShow);
      if (answer.ok && other) { form.hidden = true; other.hidden = false; }
      await refreshAll();
    } catch (error) {
      notice(false, "the console did not answer: " + error);
    } finally {
      if (button) button.disabled = false;
    }
  });

  document.addEventListener("click", async function (event) {
    const button = event.target instanceof Element ? event.target.closest("[data-log]") : null;
    if (!button) return;
    const target = document.getElementById("log-text");
    target.textContent = "loading…";
    const response = await fetch(button.dataset.log, { credentials: "same-origin" });
    const text = await response.text();
    target.textContent = text || "(the log is empty: the task wrote nothing to stdout or stderr)";
    target.dataset.status = String(response.status);
  });

  window.setTimeout(poll, pollMs);
})();
