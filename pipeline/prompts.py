"""Open-vocabulary runs: an open-vocabulary bundle re-prompted with the run's own classes.

:func:`bundle_with_prompts` makes a run-specific copy of an open-vocabulary bundle with
another prompt list (``segpipe run --prompts``): its ``model.yaml`` lists the new prompts
as classes, its weights are a link to the original's. Actors load bundles by path, so
pointing the pool at the copy is how the prompts reach them; the driver's reports read
the same class table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.bundle import ClassSpec, ModelBundle, ModelSpec, load_bundle, write_spec
from segcore.errors import ConfigError

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def prompt_classes(prompts: list[str]) -> list[ClassSpec]:
    """The class table of a prompt list: ids 0..K-1 in order, stuff, palette colours."""
    return [ClassSpec(id=i, name=p, color=_PALETTE[i % len(_PALETTE)])
            for i, p in enumerate(prompts)]


def bundle_with_prompts(bundle: ModelBundle, prompts: list[str], work_dir: Path) -> ModelBundle:
    """A copy of an open-vocabulary bundle that segments ``prompts`` (classes 0..K-1).

    Written under ``work_dir/<name>-<digest of prompts>/``: ``model.yaml`` with the new
    class table and the original weights (hard link, else copy). Idempotent.

    Raises
    ------
    ConfigError
        If the bundle is not open-vocabulary (its ``model.yaml`` has no ``prompts``).
    """
    if bundle.spec.prompts is None:
        raise ConfigError(
            f"--prompts: model '{bundle.name}' is not an open-vocabulary model (its model.yaml "
            f"has no 'prompts'); its classes are fixed: {', '.join(bundle.spec.class_names)}")
    if bundle.spec.format.value != "state_dict":
        raise ConfigError(
            f"--prompts: model '{bundle.name}' is a {bundle.spec.format.value} program whose "
            "prompt embeddings are frozen in it; re-prompting needs a state_dict bundle")
    prompts = [p.strip() for p in prompts]
    digest = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:12]
    target = Path(work_dir) / f"{bundle.name}-{digest}"
    spec = bundle.spec.model_copy(update={"prompts": prompts, "classes": prompt_classes(prompts)})
    spec = ModelSpec.model_validate(spec.model_dump())  # re-validate the new class table
    target.mkdir(parents=True, exist_ok=True)
    weights = target / spec.weights
    if not weights.exists():
        with atomic_path(weights) as tmp:
            try:
                os.link(bundle.weights_path, tmp)
            except OSError:
                shutil.copyfile(bundle.weights_path, tmp)
    write_spec(target, spec)
    return load_bundle(target)
