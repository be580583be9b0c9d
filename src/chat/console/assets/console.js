// incidentd console: answers to buttons and posts in place, and live updates over server-sent
// events. Everything works without this script too (plain forms and page loads).
"use strict";
(() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  const fragment = (html) => {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  };
  // An answer shows as the server rendered it (its Markdown as safe HTML), else as plain text.
  const show = (el, text, html) => {
    if (!el) return;
    if (html) el.innerHTML = html; else el.textContent = text;
    el.hidden = false;
  };

  // Forms marked data-ajax post in the background; the answer shows next to them.
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-ajax")) return;
    e.preventDefault();
    const data = new URLSearchParams(new FormData(form));
    if (e.submitter && e.submitter.name) data.set(e.submitter.name, e.submitter.value);
    // Live updates may replace the card while the request runs: find the answer's place by id.
    const holder = form.closest(".card") || form.closest(".thread");
    const holderId = holder ? holder.id : null;
    const out = () => {
      if (form.isConnected && form.querySelector(".ephemeral")) return form.querySelector(".ephemeral");
      const h = holderId && document.getElementById(holderId);
      return h ? h.querySelector(".ephemeral") : null;
    };
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const r = await fetch(form.action, {
        method: "POST", body: data, credentials: "same-origin",
        headers: { "accept": "application/json", "x-csrf-token": csrf },
      });
      if (r.status === 401) { location.href = "/console/login"; return; }
      const j = await r.json().catch(() => ({ text: "HTTP " + r.status }));
      show(out(), j.text || j.error || "HTTP " + r.status, j.html);
      if (r.ok && form.hasAttribute("data-reset")) {
        const keep = document.activeElement;
        form.querySelectorAll("textarea, input[type=text]").forEach((i) => { i.value = ""; });
        if (keep) keep.focus();
      }
    } catch (err) {
      show(out(), "Network error: " + err.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });

  // Ctrl/Cmd+Enter sends the compose box.
  const compose = document.getElementById("compose-text");
  if (compose) compose.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); compose.form.requestSubmit(); }
  });

  // Keeps "open for …" and the countdowns to the targets current (the server rendered them at
  // load time), in the server's words (pages::span).
  const span = (s) => {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h" + (s % 3600 < 60 ? "" : " " + Math.floor((s % 3600) / 60) + " min");
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  };
  const tick = () => {
    const now = Date.now();
    document.querySelectorAll("[data-since]").forEach((el) => {
      el.textContent = "open for " + span((now - Date.parse(el.dataset.since)) / 1000);
    });
    document.querySelectorAll("[data-due]").forEach((el) => {
      const left = (Date.parse(el.dataset.due) - now) / 1000, what = el.dataset.what;
      el.textContent = left >= 0 ? span(left) + " left to " + what : what + " overdue by " + span(-left);
      el.classList.toggle("left", left >= 0);
      el.classList.toggle("overdue", left < 0);
    });
  };
  setInterval(tick, 15000);

  if (!window.EventSource || !csrf) return;
  const threads = document.getElementById("threads");
  const liveIncident = document.querySelector("[data-live-incident]");
  const liveRegion = document.querySelector("[data-live]");
  const status = document.getElementById("live");

  // Replaces an element, keeping keyboard focus on the same button or field if it was inside.
  const replace = (old, fresh) => {
    const f = document.activeElement;
    const key = f && old.contains(f) ? (f.id ? "#" + CSS.escape(f.id) : f.name && f.value ? `[name="${CSS.escape(f.name)}"][value="${CSS.escape(f.value)}"]` : null) : null;
    old.replaceWith(fresh);
    if (key) { const again = fresh.querySelector(key); if (again) again.focus(); }
  };

  // Pages other than the channel refresh their live part from the server.
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      const r = await fetch(location.href, { credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const sel = liveIncident ? "[data-live-incident]" : "[data-live]";
      const mine = document.querySelector(sel), theirs = doc.querySelector(sel);
      if (mine && theirs) replace(mine, document.importNode(theirs, true));
    }, 250);
  };

  let broken = false;
  const es = new EventSource("/console/events");
  es.addEventListener("ready", () => {
    if (status) { status.textContent = "live"; status.classList.add("on"); }
    // After a lost connection, the page may have missed events: load it again.
    if (broken) location.reload();
  });
  es.onerror = () => {
    broken = true;
    if (status) { status.textContent = "reconnecting…"; status.classList.remove("on"); }
  };
  es.addEventListener("reload", () => location.reload());
  es.addEventListener("card", (ev) => {
    const d = JSON.parse(ev.data);
    if (threads) {
      const t = document.getElementById("thread-" + d.incident);
      if (t) {
        const c = document.getElementById("card-" + d.incident);
        if (c) {
          const fresh = fragment(d.card);
          // Keep the private answer the user was just shown.
          const was = c.querySelector(".ephemeral"), now = fresh.querySelector(".ephemeral");
          if (was && now && !was.hidden) { now.innerHTML = was.innerHTML; now.hidden = false; }
          replace(c, fresh);
        }
      } else {
        const el = fragment(d.thread);
        el.classList.add("flash");
        threads.prepend(el);
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
      }
    } else if (!liveIncident || liveIncident.dataset.liveIncident === d.incident) {
      if (liveIncident || liveRegion) refresh();
    }
  });
  es.addEventListener("reply", (ev) => {
    const d = JSON.parse(ev.data);
    const list = document.getElementById("replies-" + d.incident);
    if (list) list.append(fragment(d.html));
    if (liveIncident && liveIncident.dataset.liveIncident === d.incident) refresh();
  });
  es.addEventListener("chat", (ev) => {
    const list = document.getElementById("channel");
    if (list) {
      list.append(fragment(JSON.parse(ev.data).html));
      const det = list.closest("details");
      if (det) det.open = true;
    }
  });
})();
