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
};
