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


def test_training_curves_against_time_and_smoothed(workspace):
    from ivt_core.store.jobs import add_metric, create_job
    from ui.context import AppContext
    from ui.train import curves

    with workspace.connect() as db:
        job = create_job(db, "sft", [], "x.log")
        for step, value in enumerate([4.0, 3.0, 2.0], start=1):
            add_metric(db, job, step, "loss", value)
    ctx = AppContext(workspace)
    by_step = curves(ctx, job)
    assert list(by_step.data[0].x) == [1, 2, 3] and list(by_step.data[0].y) == [4.0, 3.0, 2.0]
    timed = curves(ctx, job, smoothing=0.5, by_time=True)
    assert timed.layout.xaxis.title.text == "minutes" and list(timed.data[1].y) == [4.0, 3.5, 2.75]
    assert all(x >= 0 for x in timed.data[1].x)


def test_empty_tables_name_their_columns(workspace):
    """Before there is anything to show, Compare's and Explore's tables show their headers (they showed gradio's
    placeholder headers "1 2 3")."""
    from ui.compare import PAIR_COLUMNS, compare_view, sample_frame
    from ui.context import AppContext
    from ui.explore import SAMPLE_COLUMNS, samples_frame

    ctx = AppContext(workspace)
    _, pairs, _, _ = compare_view(ctx, [1])
    assert list(pairs.columns) == PAIR_COLUMNS == ["run", "vs", "at", "wins", "losses", "ties"]
    assert list(sample_frame(ctx, [], "all")[0].columns) == ["sample", "expression"]
    assert list(samples_frame(ctx, None, "all", False, "")[0].columns) == SAMPLE_COLUMNS
