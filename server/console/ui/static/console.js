// Tendril console: plain JavaScript, no build step. Pages work without it
// (forms post and redirect); with it, buttons ask before destructive
// actions, parts of pages refresh in place, and task logs follow live.
"use strict";

(function () {
  var submitting = false;

  // Confirmation for buttons that carry data-confirm, and a busy state
  // so that a slow action (a Calamari push) is not pressed twice.
  document.addEventListener("submit", function (e) {
    var b = e.submitter;
    if (b && b.dataset.confirm && !window.confirm(b.dataset.confirm)) {
      e.preventDefault();
      return;
    }
    submitting = true;
    if (b) {
      b.disabled = true;
      b.setAttribute("aria-busy", "true");
    }
  });
  // Coming back through the history must not leave buttons disabled.
  window.addEventListener("pageshow", function () {
    submitting = false;
    document.querySelectorAll("button[aria-busy]").forEach(function (b) {
      b.disabled = false;
      b.removeAttribute("aria-busy");
    });
  });

  // A refresh must not swap a button out from under a press: between
  // pointer down and up the part of the page stays as it is.
  var pressing = false;
  document.addEventListener("pointerdown", function () { pressing = true; }, true);
  document.addEventListener("pointerup", function () { pressing = false; }, true);
  document.addEventListener("pointercancel", function () { pressing = false; }, true);

  function signIn() {
    window.location.href = "/signin?next=" + encodeURIComponent(window.location.pathname);
  }

  // Elements with data-refresh are replaced by the HTML fragment at that
  // address every data-refresh-seconds, while the page is visible.
  function refresh(el) {
    if (submitting || document.hidden) {
      return Promise.resolve();
    }
    return fetch(el.dataset.refresh, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "text/html" }
    }).then(function (r) {
      if (r.status === 401) {
        signIn();
        return;
      }
      if (!r.ok) {
        return;
      }
      return r.text().then(function (html) {
        // Keep the element (and keyboard focus in it) when nothing
        // changed, and never replace it mid-press or mid-submit.
        var a = document.activeElement;
        var focused = a && a !== document.body && el.contains(a) && a.matches(":focus-visible");
        if (submitting || pressing || focused || html === el.tendrilLastHTML) {
          return;
        }
        el.tendrilLastHTML = html;
        if (el.dataset.refreshParts === "true") {
          replaceParts(el, html);
          return;
        }
        el.innerHTML = html;
      });
    }).catch(function () { /* the next tick tries again */ });
  }
  // With data-refresh-parts, only the elements marked data-part are
  // replaced, each by the fragment's element of the same data-part: what
  // lies between them (a group's streaming logs, a log's open or closed
  // state) stays as it is.
  function replaceParts(el, html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    tpl.content.querySelectorAll("[data-part]").forEach(function (fresh) {
      var old = el.querySelector('[data-part="' + CSS.escape(fresh.dataset.part) + '"]');
      if (old && old.outerHTML !== fresh.outerHTML) {
        old.replaceWith(document.importNode(fresh, true));
      }
    });
  }
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    var secs = parseFloat(el.dataset.refreshSeconds) || 5;
    window.setInterval(function () { refresh(el); }, secs * 1000);
  });

  // A task log follows the coordinator's NDJSON stream: one JSON object
  // per line, then {"end": task} once the task has finished. status is
  // where it says how the stream goes; onEnd runs once the task ended.
  function followLog(log, status, onEnd) {
    if (log.tendrilFollowing) {
      return;
    }
    log.tendrilFollowing = true;
    var next = parseInt(log.dataset.next, 10) || 1;
    var ended = false;
    var append = function (l) {
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      var span = document.createElement("span");
      span.className = "line " + (l.stream || "");
      span.textContent = l.text + "\n";
      log.appendChild(span);
      if (atBottom) {
        log.scrollTop = log.scrollHeight;
      }
    };
    var follow = function () {
      status.textContent = "Following the log…";
      fetch(log.dataset.log + "?follow=true&from=" + next, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Accept": "application/x-ndjson" }
      }).then(function (r) {
        if (r.status === 401) {
          signIn();
          return;
        }
        if (!r.ok || !r.body) {
          throw new Error("HTTP " + r.status);
        }
        var reader = r.body.getReader();
        var decoder = new TextDecoder();
        var buf = "";
        var pump = function () {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              return;
            }
            buf += decoder.decode(chunk.value, { stream: true });
            var lines = buf.split("\n");
            buf = lines.pop();
            lines.forEach(function (line) {
              if (!line.trim()) {
                return; // keep-alive
              }
              var o = JSON.parse(line);
              if (o.end) {
                ended = true;
                status.textContent = "The task " + o.end.state + (o.end.finished_at ? " with exit code " + o.end.exit_code : "") + ".";
                log.dataset.ended = o.end.state;
                if (onEnd) {
                  onEnd();
                }
                return;
              }
              append(o);
              next = o.seq + 1;
            });
            return pump();
          });
        };
        return pump();
      }).then(function () {
        if (!ended) {
          window.setTimeout(follow, 2000);
        }
      }).catch(function (err) {
        status.textContent = "Lost the log stream (" + err.message + "); retrying…";
        window.setTimeout(follow, 2000);
      });
    };
    follow();
  }

  // The task page: its log, of which the page rendered the start.
  var log = document.getElementById("log");
  if (log && log.dataset.log) {
    var status = document.getElementById("log-status");
    if (log.dataset.finished !== "true" || log.dataset.truncated === "true") {
      followLog(log, status, function () {
        var summary = document.getElementById("task");
        if (summary) {
          refresh(summary);
        }
      });
    } else {
      status.textContent = "The task has finished.";
    }
  }

  // A script run's group view: each machine's log, followed while its
  // row is open (a closed one starts when opened).
  var group = document.getElementById("group");
  if (group) {
    group.querySelectorAll("details.group-log").forEach(function (d) {
      var start = function () {
        var pre = d.querySelector("pre.log");
        followLog(pre, d.querySelector(".log-status"), function () { refresh(group); });
      };
      if (d.open) {
        start();
      }
      d.addEventListener("toggle", function () {
        if (d.open) {
          start();
        }
      });
    });
  }
})();

// Copy buttons next to text shown once (a join command, a new API key):
// the clipboard where the browser allows it, else the text is selected
// for the person to copy.
(function () {
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button.copy-button");
    if (!b) {
      return;
    }
    var box = b.parentElement.querySelector(".copy-text");
    if (!box) {
      return;
    }
    var select = function () {
      var range = document.createRange();
      range.selectNodeContents(box);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      b.textContent = "Press Ctrl+C to copy";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(box.textContent).then(function () {
        b.textContent = "Copied";
      }, select);
    } else {
      select();
    }
  });
})();

// The script console's form: "Add a variable" copies the last row of its
// list, empty; choosing a machine or an environment selects that kind of
// target.
(function () {
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button[data-add-row]");
    if (!b) {
      return;
    }
    var rows = document.getElementById(b.dataset.addRow);
    var last = rows && rows.lastElementChild;
    if (!last) {
      return;
    }
    var row = last.cloneNode(true);
    row.querySelectorAll("input").forEach(function (i) { i.value = ""; });
    rows.appendChild(row);
    row.querySelector("input").focus();
  });
  document.addEventListener("change", function (e) {
    var owner = e.target.closest && e.target.closest("[data-selects]");
    if (!owner) {
      return;
    }
    var radio = document.getElementById(owner.dataset.selects);
    if (radio) {
      radio.checked = true;
    }
  });
})();
