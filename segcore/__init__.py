"""segcore: pure segmentation math and models.

No file, network, Ray or Prefect imports live here (enforced by import-linter):
everything takes and returns arrays or tensors, so it is testable in memory.
"""

__version__ = "0.1.0"
