// Patchbay console: live updates. Every element with data-live listens to the server-sent
// events at that URL: "event" rows are put at the top (data-live-mode="prepend"), "changed"
// makes it fetch its fragment (data-refresh) again, until the fragment holds an element with
// data-live-end. Everything else works without JavaScript.
(function () {
  "use strict";
  function state(text) {
    var s = document.getElementById("live-state");
    if (s) s.textContent = text;
  }
  document.querySelectorAll("[data-live]").forEach(function (el) {
    var source = new EventSource(el.getAttribute("data-live"));
    var busy = false;
    var again = false;
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) {
          if (r.redirected || !r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          // What the fragment shows has ended (a finished broadcast): nothing more to follow.
          if (el.querySelector("[data-live-end]")) {
            source.close();
            el.setAttribute("data-live-ended", "1");
            state("");
            // Its controls (pause, cancel) have nothing left to act on.
            document.querySelectorAll("[data-while-live]").forEach(function (c) { c.hidden = true; });
          }
        })
        .catch(function () { state("could not refresh: reload the page"); })
        .then(function () {
          busy = false;
          if (again) { again = false; refresh(); }
        });
    }
    source.onopen = function () {
      // What changed between the page's rendering and this subscription is fetched once.
      if (el.getAttribute("data-refresh")) refresh();
      el.setAttribute("data-live-ready", "1");
      state("live");
    };
    source.onerror = function () {
      el.removeAttribute("data-live-ready");
      state("reconnecting…");
    };
    source.addEventListener("event", function (e) {
      el.insertAdjacentHTML("afterbegin", e.data);
    });
    source.addEventListener("changed", refresh);
  });
  // "Try it": the console answers the platform's request for the text, which the browser
  // then posts to the channel's webhook, as the platform would.
  document.querySelectorAll("form[data-try]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var out = form.querySelector("output");
      out.textContent = "sending…";
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(form)).toString()
      })
        .then(function (r) {
          if (!r.ok) throw new Error("the console answered " + r.status);
          return r.json();
        })
        .then(function (req) {
          return fetch(req.path, { method: req.method, headers: req.headers, body: req.body });
        })
        .then(function (r) {
          out.textContent = r.ok
            ? "Posted: the webhook answered " + r.status + ". Watch the events below."
            : "The webhook answered " + r.status + ".";
          out.setAttribute("data-status", String(r.status));
        })
        .catch(function (err) { out.textContent = "Not sent: " + err.message; });
    });
  });
})();
