// MathJax 2 settings, read by MathJax.js (loaded after this file; see docs/hooks.py).
// pymdownx.arithmatex turns $...$ and $$...$$ into \(...\) and \[...\]; the notebook pages
// add their own $...$ settings through the text/x-mathjax-config block nbconvert writes.
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  tex2jax: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  "HTML-CSS": {
    availableFonts: [],
    preferredFont: null,
    webFont: "STIX-Web",
    imageFont: null,
    linebreaks: {automatic: false},  // automatic breaks cut table-cell math to the header's width
  },
  showMathMenu: false,
  messageStyle: "none",
  // A display equation wider than the column (on a phone, mostly) is set smaller until it fits,
  // down to 60% of the text size; what still does not fit scrolls sideways in its box.
  AuthorInit: function () {
    // A numbered equation is a table as wide as the column: its overflow is inside it, so the
    // width needed is where its rightmost piece ends.
    function needed(box) {
      const left = box.getBoundingClientRect().left;
      let right = left + box.scrollWidth;
      box.querySelectorAll(".MathJax span").forEach(function (piece) {
        right = Math.max(right, piece.getBoundingClientRect().right);
      });
      return right - left;
    }
    function fit() {
      document.querySelectorAll("div.arithmatex").forEach(function (box) {
        let scale = parseFloat(box.style.fontSize) / 100 || 1;
        for (let pass = 0; pass < 3 && scale > 0.6; pass++) {
          const width = needed(box);
          if (width <= box.clientWidth + 1) break;
          scale = Math.max(0.6, scale * (box.clientWidth - 4) / width);
          box.style.fontSize = scale * 100 + "%";
        }
      });
    }
    MathJax.Hub.Register.StartupHook("End", function () {
      fit();
      setTimeout(fit, 1000);  // again once the web fonts have settled
    });
  },
};
