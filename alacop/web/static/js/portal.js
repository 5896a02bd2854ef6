// Progressive enhancements only: every page works without this file.
(function () {
  "use strict";
  document.querySelectorAll("input[data-capslock]").forEach(function (input) {
    var note = document.getElementById(input.getAttribute("data-capslock"));
    if (!note) { return; }
    function check(event) {
      if (event.getModifierState) { note.hidden = !event.getModifierState("CapsLock"); }
    }
    input.addEventListener("keydown", check);
    input.addEventListener("keyup", check);
  });
  document.querySelectorAll("input[data-toggles]").forEach(function (box) {
    var target = document.getElementById(box.getAttribute("data-toggles"));
    if (!target) { return; }
    box.closest(".show-password").hidden = false;
    box.addEventListener("change", function () { target.type = box.checked ? "text" : "password"; });
  });
})();
