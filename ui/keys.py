"""Keyboard shortcuts of the Traces tab, injected into the page head (Gradio has no key bindings of its own).

Keys act only while the Traces tab is visible and the focus is not in a text field; Ctrl+Enter in the
reasoning box saves. Each key clicks the button of the same name, so keys and buttons do exactly the same.
"""

HEAD = """
<script>
(() => {
  const keys = {a: "trace-approve", r: "trace-reject", s: "trace-save", j: "trace-next", k: "trace-prev"};
  const visible = (el) => el && el.offsetParent !== null;
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
      target.isContentEditable || (target.tagName === "INPUT" && target.type !== "range" && target.type !== "radio"
        && target.type !== "checkbox"));
    if (event.key === "Enter" && event.ctrlKey && target && target.closest && target.closest("#trace-reasoning")) {
      const save = document.getElementById("trace-save");
      if (visible(save)) { event.preventDefault(); target.dispatchEvent(new Event("blur")); save.click(); }
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const id = keys[event.key];
    const button = id && document.getElementById(id);
    if (visible(button)) { event.preventDefault(); button.click(); }
  });
})();
</script>
"""
