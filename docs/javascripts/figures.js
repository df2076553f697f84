// Click a figure to see it at full size over the page; click again (or Escape) to close it.
// A figure wider than the window is fitted first; clicking it then shows it at its own size.
(function () {
  function close(overlay) {
    overlay.remove();
    document.removeEventListener("keydown", overlay._onKey);
  }

  function open(src, alt) {
    const overlay = document.createElement("div");
    overlay.className = "figure-overlay";
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-label", alt || "figure");
    const image = document.createElement("img");
    image.src = src;
    image.alt = alt || "";
    const hint = document.createElement("span");
    hint.className = "figure-overlay__hint";
    hint.textContent = "click or Esc to close";
    overlay.append(image, hint);
    image.addEventListener("load", function () {
      overlay.style.setProperty("--natural-width", image.naturalWidth + "px");
    });
    overlay.addEventListener("click", function (event) {
      const fitted = image.clientWidth < image.naturalWidth;
      if (event.target === image && fitted && !overlay.classList.contains("actual-size")) {
        overlay.classList.add("actual-size");
        return;
      }
      close(overlay);
    });
    overlay._onKey = function (event) {
      if (event.key === "Escape") close(overlay);
    };
    document.addEventListener("keydown", overlay._onKey);
    document.body.append(overlay);
  }

  document.addEventListener("click", function (event) {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const link = event.target.closest("a.figure-link");
    const image = link ? link.querySelector("img")
      : event.target.closest(".jupyter-wrapper .jp-OutputArea-output img");
    if (!image) return;
    event.preventDefault();
    open(link ? link.href : image.src, image.alt);
  });
})();
