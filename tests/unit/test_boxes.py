import pytest

from ivt_core.boxes import Box, from_model, interpolate, iou, to_model
from ivt_core.errors import InvalidInputError


def test_iou_identical_is_one():
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0


def test_iou_half_overlap_is_one_third():
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_iou_exactly_half():
    # 10x10 inside 10x20: inter 100, union 200
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 10, 20)) == 0.5


def test_iou_disjoint_missing_and_degenerate_are_zero():
    assert iou(Box(0, 0, 1, 1), Box(2, 2, 3, 3)) == 0.0
    assert iou(None, Box(0, 0, 1, 1)) == 0.0
    assert iou(Box(1, 1, 1, 1), Box(1, 1, 1, 1)) == 0.0


def test_inverted_corners_are_swapped():
    assert Box.from_xyxy([10, 20, 0, 5]) == Box(0, 5, 10, 20)


def test_coco_xywh_round_trip():
    box = Box.from_xywh([10, 20, 30, 40])
    assert box == Box(10, 20, 40, 60)
    assert box.to_xywh() == [10, 20, 30, 40]


def test_negative_coco_size_rejected():
    with pytest.raises(InvalidInputError):
        Box.from_xywh([0, 0, -1, 5])


def test_non_finite_rejected():
    with pytest.raises(InvalidInputError):
        Box.from_xyxy([0, 0, float("nan"), 1])
    with pytest.raises(InvalidInputError):
        Box.from_xyxy([1, 2, 3])


def test_clip_out_of_image():
    assert Box(-5, -5, 700, 500).clip(640, 480) == Box(0, 0, 640, 480)


def test_norm1000_to_pixels():
    assert from_model([500, 0, 1000, 500], "norm1000", (640, 480)) == Box(320, 0, 640, 240)


def test_abs_resized_rescaled_to_original():
    # Qwen2.5-VL saw the 640x480 image resized to 644x476
    box = from_model([322, 238, 644, 476], "abs_resized", (640, 480), (644, 476))
    assert box == Box(320, 240, 640, 480)


def test_abs_resized_needs_resized_size():
    with pytest.raises(InvalidInputError):
        from_model([1, 2, 3, 4], "abs_resized", (640, 480))


def test_from_model_clips_and_orders():
    assert from_model([1200, 900, -10, 100], "norm1000", (100, 100)) == Box(0, 10, 100, 90)


def test_to_model_inverts_from_model():
    box = Box(64, 48, 320, 240)
    assert to_model(box, "norm1000", (640, 480)) == [100, 100, 500, 500]
    assert to_model(box, "norm1", (640, 480)) == [0.1, 0.1, 0.5, 0.5]


def test_unknown_convention():
    with pytest.raises(InvalidInputError, match="norm1000"):
        from_model([1, 2, 3, 4], "pixels", (10, 10))


def test_interpolate_endpoints_and_middle():
    a, b = Box(0, 0, 10, 10), Box(10, 10, 30, 30)
    assert interpolate(a, b, 0) == a
    assert interpolate(a, b, 1) == b
    assert interpolate(a, b, 0.5) == Box(5, 5, 20, 20)
