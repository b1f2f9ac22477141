"""Drawing a box by dragging on the Traces image (Gradio's Image has clicks, not drags; the clicks stay too).

The script in ``HEAD`` shows the rectangle while the mouse is down, and on release writes the box, in pixels of
the image as sent, into the hidden textbox ``#trace-drag`` ("x1 y1 x2 y2 n", n a counter so a repeated drag is
still a change); ``ui.traces`` turns that into the four numbers. Pixel positions follow Gradio's own click
mapping (image scaled to fit, never enlarged, centred in its element). The click that ends a drag is swallowed
so it does not also count as a corner click.
"""

HEAD = """
<script>
(() => {
  let drag = null, swallowUntil = 0, sent = 0;
  const MIN_PX = 4;
  const frameOf = (t) => t && t.closest ? t.closest("#trace-image button") : null;
  const toImage = (img, x, y) => {
    const r = img.getBoundingClientRect();
    const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    const left = r.left + (r.width - img.naturalWidth * s) / 2, top = r.top + (r.height - img.naturalHeight * s) / 2;
    const cx = Math.min(Math.max(x, left), left + img.naturalWidth * s);
    const cy = Math.min(Math.max(y, top), top + img.naturalHeight * s);
    return {x: (cx - left) / s, y: (cy - top) / s, px: cx, py: cy};
  };
  document.addEventListener("dragstart", (e) => { if (frameOf(e.target)) e.preventDefault(); }, true);
  document.addEventListener("pointerdown", (e) => {
    const frame = frameOf(e.target), img = frame && frame.querySelector("img");
    if (!img || e.button !== 0 || !img.naturalWidth) return;
    drag = {img, start: toImage(img, e.clientX, e.clientY), x: e.clientX, y: e.clientY, rect: null};
  }, true);
  document.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (!drag.rect && Math.abs(e.clientX - drag.x) < MIN_PX && Math.abs(e.clientY - drag.y) < MIN_PX) return;
    if (!drag.rect) {
      drag.rect = document.createElement("div");
      drag.rect.id = "trace-drag-rect";
      drag.rect.style.cssText = "position:fixed;border:2px dashed #1e64ff;background:rgba(30,100,255,.12);" +
        "pointer-events:none;z-index:1000";
      document.body.appendChild(drag.rect);
    }
    const end = toImage(drag.img, e.clientX, e.clientY), a = drag.start;
    Object.assign(drag.rect.style, {left: Math.min(a.px, end.px) + "px", top: Math.min(a.py, end.py) + "px",
      width: Math.abs(end.px - a.px) + "px", height: Math.abs(end.py - a.py) + "px"});
  }, true);
  document.addEventListener("pointerup", (e) => {
    const d = drag;
    drag = null;
    if (!d || !d.rect) return;
    d.rect.remove();
    swallowUntil = Date.now() + 500;
    const end = toImage(d.img, e.clientX, e.clientY), a = d.start;
    const box = [Math.min(a.x, end.x), Math.min(a.y, end.y), Math.max(a.x, end.x), Math.max(a.y, end.y)];
    const field = document.querySelector("#trace-drag textarea, #trace-drag input");
    if (!field) return;
    const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(field), "value").set;
    sent += 1;
    setter.call(field, box.map((v) => v.toFixed(1)).join(" ") + " " + sent);
    field.dispatchEvent(new Event("input", {bubbles: true}));
  }, true);
  document.addEventListener("click", (e) => {
    if (Date.now() < swallowUntil && frameOf(e.target)) { e.stopPropagation(); e.preventDefault(); }
    swallowUntil = 0;
  }, true);
})();
</script>
"""
