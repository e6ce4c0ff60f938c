"""The nightly pass: segment every scene in an inbox that is new or whose model/settings changed.

``nightly_pass`` is the deployment's entry point (``flows/nightly.py:nightly_pass``,
deployment ``segpipe-nightly``, see :mod:`flows.schedule`). It relies on the run
fingerprint (:mod:`pipeline.run.resume`): a scene already finished with the same input,
model and output options is reused, not recomputed, so a pass over an unchanged
inbox does no work, whichever earlier flow run produced the results.

An empty inbox is a normal pass with zero scenes. A missing inbox or an
unreadable model is unusable (:class:`segcore.errors.SegpipeError`, the flow run
fails; ``segpipe nightly --once`` checks this first and exits 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.schedules import Cron, Schedule

from flows.artifacts import pass_summary
from flows.schedule import DEFAULT_CRON, DEFAULT_TIMEZONE, FLOW_NAME
from flows.segment_scene import BatchResult, segment_batch
from pipeline.bundle import ModelBundle, load_bundle
from pipeline.discovery import Found, find, match_labels, scan
from pipeline.options import RunOptions, load_run_options
from pipeline.report.batch import write_batch
from pipeline.run.workspace import prepare_out_dir
from segcore.errors import ConfigError

ARTIFACT_PREFIX = "segpipe-nightly"


def nightly_schedule(cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE) -> Schedule:
    """The deployment's schedule; ConfigError (one line) for a bad cron or time zone."""
    from flows.settings import check_cron, check_timezone

    try:
        return Cron(check_cron(cron), timezone=check_timezone(timezone))
    except ValueError as exc:
        what = "--cron" if "cron" in str(exc) else "--timezone"
        raise ConfigError(f"{what}: {exc}") from None


def inbox_scenes(inbox: str | Path, out: str | Path) -> Found:
    """The scenes in ``inbox`` (none is fine) and the files its scan left out (junk or
    non-image objects in a DICOM tree: ``skipped`` batch rows); ConfigError when it is
    not a directory."""
    inbox, out = Path(inbox), Path(out)
    if not inbox.is_dir():
        raise ConfigError(f"--inbox {inbox}: no such directory")
    if out.resolve().is_relative_to(inbox.resolve()):
        raise ConfigError(f"--out {out}: is inside --inbox {inbox}; its exports would be "
                          "taken for new scenes, choose a directory outside the inbox")
    scenes = scan(inbox)
    return find([inbox]) if scenes else Found([])


def pass_options(options: dict[str, Any] | None) -> RunOptions:
    """Run options of a pass (resume always on: that is what makes the pass incremental)."""
    return load_run_options(None, {**(options or {}), "resume": True})


def prepare(inbox: str | Path, out: str | Path, model: str,
            options: dict[str, Any] | None = None,
            labels: str | None = None) -> tuple[Found, ModelBundle, RunOptions, dict]:
    """Validate everything a pass needs, before any work; SegpipeError when unusable."""
    run_options = pass_options(options)
    found = inbox_scenes(inbox, out)
    scenes = found.scenes
    label_map = match_labels(scenes, labels) if scenes else {}
    bundle = load_bundle(model)
    bundle.build()  # an unreadable model is caught before any work starts
    prepare_out_dir(out)
    return found, bundle, run_options, label_map


@flow(name=FLOW_NAME, validate_parameters=False, persist_result=False)
def nightly_pass(inbox: str, out: str, model: str, options: dict[str, Any] | None = None,
                 labels: str | None = None, pool: Any = None) -> dict[str, Any]:
    """Segment the inbox's new or changed scenes; reuse the rest.

    Parameters
    ----------
    inbox : str
        Directory scanned for GeoTIFF/NIfTI scenes (recursively).
    out : str
        Output directory (``<out>/<scene_id>/``, ``batch.json``, ``batch.csv``).
    model : str
        Bundled model name or model bundle directory.
    options : dict, optional
        :class:`~pipeline.options.RunOptions` fields (``workers``, ``tile``,
        ``scenes_in_flight``, ...); ``resume`` is always on.
    labels : str, optional
        Ground truth: a directory of label files named by scene id (metrics).
    pool : WorkerPool, optional
        Model actors to reuse (tests, long-lived drivers); by default the pass starts
        its own, and none at all for an empty inbox.

    Returns
    -------
    dict
        ``scenes``, ``computed``, ``reused``, ``failed`` counts, ``exit_code`` (0 all
        ok, 1 some failed), ``model``, ``batch`` (path of batch.json), ``artifacts``
        (keys) and ``outcomes`` (one dict per scene).
    """
    found, bundle, run_options, label_map = prepare(inbox, out, model, options, labels)
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if found.scenes:
        result = segment_batch(found.scenes, bundle, run_options, out_dir, label_map,
                               pool=pool, skipped=found.skipped)
    else:
        write_batch(out_dir, [], model=bundle.name)
        result = BatchResult([], {})
    return {**pass_summary(ARTIFACT_PREFIX, f"segpipe nightly pass ({bundle.name})", result,
                           out_dir, bundle.name),
            "inbox": str(inbox), "out": str(out_dir)}


def serve_nightly(inbox: str, out: str, model: str, *, options: dict[str, Any] | None = None,
                  labels: str | None = None, cron: str = DEFAULT_CRON,
                  timezone: str = DEFAULT_TIMEZONE) -> None:
    """Serve the ``segpipe-nightly`` deployment on its schedule (blocks until stopped)."""
    from flows.schedule import DEPLOYMENT_NAME

    parameters: dict[str, Any] = {"inbox": str(inbox), "out": str(out), "model": model,
                                  "options": options or {}}
    if labels is not None:
        parameters["labels"] = labels
    nightly_pass.serve(name=DEPLOYMENT_NAME, schedule=nightly_schedule(cron, timezone),
                       parameters=parameters, tags=["segpipe", "nightly"],
                       description="segpipe: segment new or changed scenes of the inbox",
                       limit=1)
