"""pipeline: I/O adapters, tiling plan, Ray inference, stitching, exports and reports (no Prefect)."""
