// Tether console: progressive enhancement only. Every page works without this file; it adds
// copy-to-clipboard buttons and the live refresh of regions marked data-refresh.
"use strict";
(function () {
  // Copy buttons: <button data-copy="element-id">.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      }, function () {
        button.textContent = "Copy failed: select the text";
      });
    });
  });

  // Live regions: <section id="x" data-refresh="2"> is fetched again every 2 s and replaced
  // by the same element of the new page; it stops when the new page no longer asks for it,
  // when the session has ended (a redirect to sign in), or after 10 failures in a row.
  document.querySelectorAll("[data-refresh]").forEach(function (region) {
    var seconds = Math.max(1, parseInt(region.getAttribute("data-refresh"), 10) || 3);
    var id = region.id;
    var failures = 0;
    if (!id) { return; }
    var timer = window.setInterval(function () {
      fetch(window.location.href, { credentials: "same-origin", cache: "no-store", redirect: "manual" })
        .then(function (response) {
          if (response.type === "opaqueredirect" || (response.status >= 400 && response.status < 500)) {
            window.clearInterval(timer);
            return null;
          }
          if (!response.ok) { throw new Error("status " + response.status); }
          return response.text();
        })
        .then(function (text) {
          if (text === null) { return; }
          failures = 0;
          var page = new DOMParser().parseFromString(text, "text/html");
          var fresh = page.getElementById(id);
          var current = document.getElementById(id);
          if (!fresh || !current) { window.clearInterval(timer); return; }
          current.replaceWith(document.importNode(fresh, true));
          if (!fresh.hasAttribute("data-refresh")) { window.clearInterval(timer); }
        })
        .catch(function () {
          failures += 1;
          if (failures >= 10) { window.clearInterval(timer); }
        });
    }, seconds * 1000);
  });
})();
