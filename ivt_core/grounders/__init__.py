"""Model backends behind one ``Grounder`` protocol."""

from ivt_core.grounders.base import Generation, Grounder, Sampling

__all__ = ["Generation", "Grounder", "Sampling"]
