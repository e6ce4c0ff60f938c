"""Checks of the files under deploy/ (Dockerfile, KubeRay, Ray cluster launcher, Prefect)."""
