"""Cluster tests run their scenarios as scripts in subprocesses; pytest must not import them."""

collect_ignore = ["scripts"]
