// vmnode viewer: the page is complete as the server sent it; this only keeps it current.
// - images get data-loaded="1" once they have loaded (or "error")
// - the serial tail polls .../serialTail with its cursor every second and appends
// - every 5 s the page's sections are fetched (?fragment=1) and those whose key changed replaced
"use strict";
(function () {
  function markImages(root) {
    root.querySelectorAll("img").forEach(function (img) {
      if (img.dataset.loaded) return;
      function done() { img.dataset.loaded = img.naturalWidth > 0 ? "1" : "error"; }
      if (img.complete) { done(); return; }
      img.addEventListener("load", done, { once: true });
      img.addEventListener("error", function () {
        img.dataset.loaded = "error";
        img.classList.add("broken");
      }, { once: true });
    });
  }
  markImages(document);

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store",
                        headers: { "accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; });
  }

  // The serial tail.
  var tail = document.getElementById("tail");
  if (tail) {
    var boot = Number(tail.dataset.boot) || 0;
    var cursor = Number(tail.dataset.cursor) || 0;
    var ended = tail.dataset.ended === "true";
    var polls = 0;
    var state = document.getElementById("tail-state");
    // As the server's page::clean: no terminal escapes or control characters but \n and \t.
    var clean = function (text) {
      return text.replace(/\x1b(\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]|\][^\x07\x1b]*(\x07|\x1b\\)|[\s\S])/g, "")
        .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
    };
    var append = function (text) {
      text = text && clean(text);
      if (!text) return;
      var follow = tail.scrollTop + tail.clientHeight >= tail.scrollHeight - 40;
      tail.appendChild(document.createTextNode(text));
      // Keep the page light: the full log is behind its link.
      if (tail.textContent.length > 400000) {
        tail.textContent = tail.textContent.slice(-300000);
      }
      if (follow) tail.scrollTop = tail.scrollHeight;
    };
    tail.scrollTop = tail.scrollHeight;
    var poll = function () {
      // After a boot ended, ask for the current boot: a new one starts from its beginning.
      var q = (ended || !boot) ? "?cursor=0" : "?boot=" + boot + "&cursor=" + cursor;
      getJSON(tail.dataset.src + q).then(function (t) {
        if (!t) return;
        if (t.boot !== boot) {
          if (boot) append("\n──────── boot #" + t.boot + " ────────\n");
          boot = t.boot;
          append(t.text);
        } else if (!ended) {
          append(t.text);
        }
        cursor = t.cursor;
        ended = t.ended;
        polls += 1;
        tail.dataset.boot = boot;
        tail.dataset.cursor = cursor;
        tail.dataset.polls = polls;
        if (state) state.textContent = "boot #" + boot + (ended ? " · ended" : " · live");
      }).catch(function () {}).then(function () { setTimeout(poll, 1000); });
    };
    setTimeout(poll, 1000);
  }

  // The other sections.
  var refresh = function () {
    fetch(location.pathname + "?fragment=1", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var t = document.createElement("template");
        t.innerHTML = html;
        t.content.querySelectorAll("section[id]").forEach(function (fresh) {
          var old = document.getElementById(fresh.id);
          if (old && old.dataset.key !== fresh.dataset.key) {
            old.replaceWith(fresh);
            markImages(fresh);
          }
        });
      })
      .catch(function () {})
      .then(function () { setTimeout(refresh, 5000); });
  };
  setTimeout(refresh, 5000);
})();
