"""Streaming semantic metrics that merge across tiles."""

from segcore.metrics.confusion import SemanticScores, confusion_matrix

__all__ = ["SemanticScores", "confusion_matrix"]
