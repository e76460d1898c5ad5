// s3proxy demo site: show when the page loaded and the validators it was served with.
"use strict";

(function () {
  var loadedAt = new Date().toLocaleTimeString();
  document.querySelectorAll("[data-loaded-at]").forEach(function (el) {
    el.textContent = loadedAt;
  });

  var headerSlots = document.querySelectorAll("[data-header]");
  if (headerSlots.length === 0 || !window.fetch) {
    return;
  }
  // HEAD this very page; no-store, so the answer comes from s3proxy, not the browser's cache.
  fetch(window.location.href, { method: "HEAD", cache: "no-store" })
    .then(function (response) {
      headerSlots.forEach(function (el) {
        el.textContent = response.headers.get(el.getAttribute("data-header")) || "(not sent)";
      });
    })
    .catch(function () {
      headerSlots.forEach(function (el) {
        el.textContent = "(unavailable)";
      });
    });
})();
