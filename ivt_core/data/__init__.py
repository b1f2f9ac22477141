"""Samples and where they come from: the shapes world (built in) and importers of public benchmarks."""

from ivt_core.data.sample import Sample, load_image

__all__ = ["Sample", "load_image"]
