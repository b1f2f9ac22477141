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


def test_style_round_trip():
    style = RenderStyle(history=True, color=(1, 2, 3))
    assert RenderStyle.from_dict(style.to_dict()) == style
