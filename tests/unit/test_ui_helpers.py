from ui.train import training_split


def test_grpo_prompts_default_to_a_train_split_never_test_when_another_exists():
    assert training_split(["shapes/test", "shapes/val"]) == "shapes/val"
    assert training_split(["refcocog/test", "shapes/val", "refcocog/train"]) == "refcocog/train"
    assert training_split(["mine/all", "shapes/test"]) == "mine/all"
    assert training_split(["shapes/test"]) == "shapes/test"
    assert training_split([]) is None


def test_smoothing_is_an_exponential_moving_average():
    from ui.train import smoothed

    assert smoothed([1.0, 3.0, 3.0], 0.0) == [1.0, 3.0, 3.0]
    assert smoothed([1.0, 3.0], 0.5) == [1.0, 2.0]
