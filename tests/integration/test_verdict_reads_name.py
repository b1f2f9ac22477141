"""benchmarks/verdict_reads_name.py: which scenes it probes, and P(keep) after a forced name in its four cells."""

import pytest


@pytest.fixture(scope="module")
def probe(benchmark_module):
    return benchmark_module("verdict_reads_name")


def test_probes_scenes_stating_a_colour_with_a_same_kind_object_of_another_colour(probe):
    from ivt_core.config.toy import world_config
    from ivt_core.data.shapes import make_sample, stated_attributes

    world = world_config("shapes-v2")
    samples = [make_sample(world, 0, "test", i) for i in range(80)]
    cases = probe.probe_cases(samples)
    assert 0 < len(cases) < len(samples)
    for case in cases:
        assert stated_attributes(case["sample"].expression)["colour"] == case["colour"] == case["right"]["colour"]
        assert case["wrong"]["kind"] == case["right"]["kind"] and case["other_colour"] != case["colour"]


def test_keep_probability_after_a_forced_name_in_each_cell(probe):
    """On the shipped toy (any model answers): one probability in (0, 1] per cell and scene."""
    from ivt_core.config.toy import world_config
    from ivt_core.data.shapes import make_sample
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    world = world_config("shapes-v2")
    cases = probe.probe_cases([make_sample(world, 0, "test", i) for i in range(40)])[:2]
    grounder = TransformersGrounder.load("assets/toy-model", device="cpu")
    p = probe.keep_probabilities(grounder, cases, {c["sample"].id: c["sample"].image for c in cases}, 8)
    assert set(p) == set(probe.CELLS)
    assert all(len(v) == len(cases) and all(0 < x <= 1 for x in v) for v in p.values())
    summary = probe.summarize(p)
    assert summary["right box, name agrees"]["n"] == len(cases)
