// credvault setup page: "Get code". The page works without this file except for that button.
// A code is asked for with the page's CSRF token; the key typed in the form goes to the
// gateway (never stored), or, for a saved key left empty, the gateway answers from the vault.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var token = document.querySelector('meta[name="csrf-token"]');
  document.querySelectorAll("button.get-code").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.dataset.field);
      var out = document.getElementById(button.dataset.out);
      var form = button.closest("form");
      var typed = input && input.value.trim() !== "";
      var url, body;
      if (typed) {
        url = "/ui/code";
        body = JSON.stringify({ key: input.value });
      } else if (button.dataset.saved === "yes" && form && form.dataset.name) {
        url = "/ui/credentials/" + encodeURIComponent(form.dataset.name) + "/code?env=" +
          encodeURIComponent(form.dataset.env);
        body = "{}";
      } else {
        out.textContent = "Type or paste the authenticator key first.";
        return;
      }
      out.textContent = "…";
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": token ? token.content : "" },
        body: body
      }).then(function (r) {
        return r.json().then(function (j) { return { ok: r.ok, j: j }; });
      }).then(function (res) {
        if (!res.ok) {
          out.textContent = res.j.error || "No code.";
          return;
        }
        out.textContent = "";
        var code = document.createElement("strong");
        code.className = "digits";
        code.textContent = res.j.code;
        out.appendChild(code);
        out.appendChild(document.createTextNode(" valid for " + res.j.valid_for + " s"));
        if (res.j.warning) {
          var w = document.createElement("span");
          w.className = "warning";
          w.textContent = " " + res.j.warning;
          out.appendChild(w);
        }
      }).catch(function () {
        out.textContent = "The gateway could not be reached.";
      });
    });
  });
});
