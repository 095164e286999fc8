// alert-relay console: live regions refresh themselves; times shown in the reader's zone;
// datetime-local fields are sent as UTC. Works without it: every page is complete HTML.
"use strict";
(function () {
  const EVERY_MS = 5000;

  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.textContent = d.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
        t.title = t.getAttribute("datetime");
      }
    }
  }

  // Refreshes a region from its data-refresh URL, keeping focus and scroll (the region's
  // HTML is replaced only when it changed, and never while the reader is inside a form in it).
  function live(region) {
    let last = null;
    async function refresh() {
      if (document.hidden || region.contains(document.activeElement) &&
          document.activeElement.tagName !== "BODY" && document.activeElement.tagName !== "A") {
        return;
      }
      try {
        const r = await fetch(region.dataset.refresh, {
          credentials: "same-origin", headers: { "X-Requested-With": "fetch" }, cache: "no-store" });
        if (r.status === 401) {
          region.insertAdjacentHTML("afterbegin",
            '<p class="notice error" role="alert">Your session ended. <a href="/ui/login">Sign in again</a>.</p>');
          clearInterval(timer);
          return;
        }
        if (!r.ok) return;
        const html = await r.text();
        const key = html.replace(/<time datetime="[^"]*">[^<]*<\/time>/g, "");
        if (key === last) return;
        last = key;
        const y = window.scrollY;
        region.innerHTML = html;
        localTimes(region);
        window.scrollTo(0, y);
        region.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
      } catch (e) { /* offline for a moment: try again next time */ }
    }
    const timer = setInterval(refresh, EVERY_MS);
  }

  function utcFields(form) {
    form.addEventListener("submit", function () {
      for (const input of form.querySelectorAll("input[data-utc]")) {
        if (!input.value || !input.name) continue;
        const d = new Date(input.value);
        if (isNaN(d)) continue;
        const hidden = document.createElement("input");
        hidden.type = "hidden";
        hidden.name = input.name;
        hidden.value = d.toISOString();
        input.removeAttribute("name");
        form.appendChild(hidden);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    for (const region of document.querySelectorAll("[data-refresh]")) live(region);
    for (const form of document.querySelectorAll("form")) {
      if (form.querySelector("input[data-utc]")) utcFields(form);
    }
    for (const input of document.querySelectorAll("input.copy")) {
      input.addEventListener("focus", function () { input.select(); });
    }
  });
})();
