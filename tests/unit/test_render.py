from PIL import Image

from ivt_core.boxes import Box
from ivt_core.render import RenderStyle, render_box


def _img():
    return Image.new("RGB", (100, 80), (255, 255, 255))


def test_default_style_red_outline_and_light_fill():
    out = render_box(_img(), Box(10, 10, 60, 50))
    assert out.getpixel((10, 30)) == (255, 0, 0)  # outline
    r, g, b = out.getpixel((35, 30))  # 25 % red fill over white
    assert r == 255 and 185 <= g <= 195 and g == b
    assert out.getpixel((80, 70)) == (255, 255, 255)


def test_deterministic():
    a = render_box(_img(), Box(5, 5, 50, 50), RenderStyle(history=True, label="1"), history=[Box(1, 1, 9, 9)])
    b = render_box(_img(), Box(5, 5, 50, 50), RenderStyle(history=True, label="1"), history=[Box(1, 1, 9, 9)])
    assert a.tobytes() == b.tobytes()


def test_ground_truth_only_when_asked():
    gt = Box(70, 10, 95, 40)
    assert render_box(_img(), None, ground_truth=gt).getpixel((70, 20)) == (255, 255, 255)
    assert render_box(_img(), None, RenderStyle(ground_truth=True), ground_truth=gt).getpixel((70, 20)) == (0, 200, 0)


def test_no_box_returns_plain_copy():
    assert render_box(_img(), None).tobytes() == _img().tobytes()


def test_nothing_to_draw_gives_the_composite_s_pixels_without_compositing(monkeypatch):
    """An unparsable step (no box) with no other layer: a copy of the image, the very pixels of compositing an
    empty overlay (RGB, RGBA with transparency, grey, palette), made without compositing the whole image (the
    slow path took ~2.5 ms per 640x480 render, twice per sample at T=2 in the loop); the input is not changed."""
    from PIL import Image as PILImage

    noise = Image.effect_noise((100, 80), 40)
    rgba = noise.convert("RGBA")
    rgba.putalpha(noise.point(lambda v: v // 2))
    images = [noise.convert("RGB"), rgba, noise, noise.convert("RGB").convert("P")]
    empty = [PILImage.alpha_composite(im.convert("RGBA"), Image.new("RGBA", im.size, (0, 0, 0, 0))).convert("RGB")
             for im in images]
    calls = []
    monkeypatch.setattr(PILImage, "alpha_composite", lambda *a: calls.append(a))
    for image, expected in zip(images, empty, strict=True):
        before = image.tobytes()
        for style, history in ((RenderStyle(), ()), (RenderStyle(history=True), [None]),
                               (RenderStyle(ground_truth=True), ())):
            out = render_box(image, None, style, history=history)
            assert out.mode == "RGB" and out.tobytes() == expected.tobytes(), (image.mode, style)
            assert out is not image
        assert image.tobytes() == before
    assert not calls


def test_style_round_trip():
    style = RenderStyle(history=True, color=(1, 2, 3))
    assert RenderStyle.from_dict(style.to_dict()) == style


def test_the_outline_style_leaves_the_boxed_evidence_unchanged():
    from ivt_core.data.shapes import COLOURS
    from ivt_core.render import OUTLINE_COLOR, RENDER_STYLES, render_style

    blue = Image.new("RGB", (60, 60), COLOURS["blue"])
    outlined = render_box(blue, Box(10, 10, 50, 50), RENDER_STYLES["outline"])
    painted = render_box(blue, Box(10, 10, 50, 50), RENDER_STYLES["paper"])
    assert outlined.getpixel((30, 30)) == COLOURS["blue"]  # inside: the shape's own colour
    assert painted.getpixel((30, 30)) != COLOURS["blue"]  # the paper's fill shifts it (blue looks purple)
    assert outlined.getpixel((10, 30)) == OUTLINE_COLOR and OUTLINE_COLOR not in COLOURS.values()
    assert render_style("auto", "shapes") == RENDER_STYLES["outline"]
    assert render_style("auto", "jsonl") == RENDER_STYLES["paper"]


def test_an_opaque_outline_is_drawn_as_the_overlay_draws_it():
    """The loop's usual render (an opaque outline, no fill) takes a direct path: the same pixels as drawing it on
    a transparent overlay and compositing, for boxes inside, on and across the edges; the input is not changed."""
    from PIL import ImageDraw

    from ivt_core.render import RENDER_STYLES, _draw_box

    style = RENDER_STYLES["outline"]
    scene = Image.effect_noise((100, 80), 40).convert("RGB")
    before = scene.tobytes()
    for box in (Box(10, 10, 60, 50), Box(0, 0, 100, 80), Box(90, 5, 100, 6), Box(40, 30, 41, 31)):
        overlay = Image.new("RGBA", scene.size, (0, 0, 0, 0))
        _draw_box(ImageDraw.Draw(overlay), box, style.color, 1.0, style.outline_px, style.fill_alpha)
        expected = Image.alpha_composite(scene.convert("RGBA"), overlay).convert("RGB")
        assert render_box(scene, box, style).tobytes() == expected.tobytes(), box
    assert scene.tobytes() == before


def test_a_filled_box_is_blended_within_its_rectangle_as_over_the_whole_image():
    """The paper's style (translucent fill) blends only the box's own rectangle: the same pixels as compositing an
    overlay of the whole image, for boxes with fractional coordinates, on and across the edges, and wholly
    outside; the input is not changed."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from PIL import ImageDraw

    from ivt_core.render import _draw_box

    style = RenderStyle()  # the paper's: red outline, 25 % fill
    scene = Image.effect_noise((100, 80), 40).convert("RGB")
    before = scene.tobytes()

    def whole_image(box):
        overlay = Image.new("RGBA", scene.size, (0, 0, 0, 0))
        _draw_box(ImageDraw.Draw(overlay), box, style.color, 1.0, style.outline_px, style.fill_alpha)
        return Image.alpha_composite(scene.convert("RGBA"), overlay).convert("RGB").tobytes()

    for box in (Box(10, 10, 60, 50), Box(0, 0, 100, 80), Box(90, 5, 100, 6), Box(40, 30, 41, 31),
                Box(-20, -10, 5.5, 7.25), Box(95.5, 70.2, 140, 120), Box(120, 90, 150, 99)):
        assert render_box(scene, box, style).tobytes() == whole_image(box), box

    coordinate = st.floats(-30, 130, allow_nan=False)

    @settings(max_examples=150, deadline=None)
    @given(coordinate, coordinate, st.floats(0, 60), st.floats(0, 60))
    def same(x, y, w, h):
        box = Box(x, y, x + w, y + h)
        assert render_box(scene, box, style).tobytes() == whole_image(box), box

    same()
    assert scene.tobytes() == before
