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


def test_the_model_card_is_the_model_s_own_or_says_where_it_came_from(workspace, tmp_path):
    """Overview's model card: the README.md of the model's own folder (its last adapter's when it has adapters,
    never its parent's checkpoint's card, which describes another model); without one, the job that made it and
    its command; a huge card is cut with a note; an unknown model is one line."""
    from ivt_core.store.jobs import create_job
    from ivt_core.store.models import register_model
    from ui.context import AppContext
    from ui.overview import CARD_CHARS, model_card

    base, sft, grpo = (tmp_path / name for name in ("base", "sft", "grpo"))
    for folder in (base, sft, grpo):
        folder.mkdir()
    (base / "README.md").write_text("# The base card\n")
    (grpo / "README.md").write_text("# The GRPO card\n" + "x" * (CARD_CHARS + 10))
    with workspace.connect() as db:
        base_id = register_model(db, "base", str(base), "qwen3_vl")
        job = create_job(db, "sft", ["ivt", "train", "sft", "--lr", "1e-4"], "x.log")
        sft_id = register_model(db, "mine-sft", str(base), "qwen3_vl", adapter_path=str(sft), parent_id=base_id,
                                origin_job=job)
        grpo_id = register_model(db, "mine-grpo", str(base), "qwen3_vl", adapter_path=f"{sft},{grpo}",
                                 parent_id=sft_id)
    ctx = AppContext(workspace)
    assert model_card(ctx, base_id).startswith("# The base card\n\n*No runs of base in this workspace yet.*")
    (base / "README.md").write_text("Acc@0.5 is `acc@0.5` in code\n")
    assert model_card(ctx, base_id).startswith("Acc&#64;0.5 is `acc@0.5` in code\n")  # not an e-mail address link
    own = model_card(ctx, sft_id)
    assert "The base card" not in own and "no model card" in own and str(sft) in own
    assert f"job {job} (sft" in own and "`ivt train sft --lr 1e-4`" in own and f"model {base_id}" in own
    long = model_card(ctx, grpo_id)
    assert long.startswith("# The GRPO card") and f"cut at {CARD_CHARS:,} characters" in long
    assert len(long) < CARD_CHARS + 200
    assert "No runs of mine-sft in this workspace yet" in own
    (sft / "README.md").write_text("---\nlibrary_name: peft\n---\n\n# Model Card for Model ID\n\n"
                                   "[More Information Needed]\n")
    template = model_card(ctx, sft_id)  # peft's empty template counts as no card
    assert "Model ID" not in template and "only peft's empty template" in template and "`ivt train sft" in template
    assert "no model with id 999" in model_card(ctx, 999)
    assert "No models registered" in model_card(ctx, None)


def test_a_model_whose_weights_were_replaced_does_not_show_the_new_weights_card(workspace, tmp_path):
    """The shipped toys replaced in place: the card in the folder describes the new weights, so the earlier
    model's card says so (and lists its own runs) instead of showing it."""
    from ivt_core.store.models import register_model
    from ui.context import AppContext
    from ui.overview import model_card

    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"first" * 100)
    (folder / "README.md").write_text("# The new toy's card\n")
    with workspace.connect() as db:
        old = register_model(db, "toy", str(folder), "qwen3_vl")
        (folder / "model.safetensors").write_bytes(b"second" * 100)
        new = register_model(db, "toy", str(folder), "qwen3_vl")
    ctx = AppContext(workspace)
    assert model_card(ctx, new).startswith("# The new toy's card")
    card = model_card(ctx, old)
    assert "The new toy's card" not in card and f"they are model {new} now" in card
    assert "is not shown here" in card and "*No runs of toy (weights of " in card


def test_the_model_card_lists_the_model_s_runs_with_their_numbers(workspace):
    """Under the card: the model's runs in this workspace, step 0, final and oracle Acc@0.5 (its numbers as of
    now; a card written at training time has none)."""
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.evaluate import EvalRequest, evaluate
    from ivt_core.loop import LoopConfig
    from ivt_core.store.runs import get_run
    from tests.fakes import ScriptedGrounder
    from ui.context import AppContext
    from ui.overview import model_card

    write_shapes_split(workspace, "test", 4)
    answers = ['[0, 0, 1000, 1000]', 'Move. [0, 0, 500, 500]', "??"]
    result = evaluate(workspace, ScriptedGrounder(lambda t, s: answers[s]), "/m",
                      EvalRequest("shapes", "test", LoopConfig(steps=2)))
    run = get_run(workspace.connect(), result.run_id)
    card = model_card(AppContext(workspace), run["model_id"])
    m = run["metrics"]
    row = (f"| {run['id']} | shapes/test | 2 | 4 | done | {m['step0']['acc@0.5']:.3f} | {m['final']['acc@0.5']:.3f} | "
           f"{m['oracle']['acc@0.5']:.3f} |")
    assert "Runs of " in card and "Acc&#64;0.5" in card and row in card
