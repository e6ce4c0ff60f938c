"""The ``segpipe`` command line (CONTRACT.md).

Exit codes: 0 every scene succeeded; 1 some scenes failed and the rest
completed; 2 the command was unusable (bad flag, no input, unreadable model)
and no work was started. Problems are one line each; ``--debug`` adds tracebacks.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows import environment

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="segpipe: seamless segmentation of huge GeoTIFF scenes and NIfTI volumes.")
err = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)

EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE = 0, 1, 2


def _fail(message: str, code: int = EXIT_UNUSABLE) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


class RichProgress:
    """Progress sink: one bar per scene, advanced per finished tile."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def start(self, scene_id: str, stage: str, total: int) -> None:
        self.tasks[scene_id] = self.progress.add_task(f"{scene_id} {stage}", total=total)

    def advance(self, scene_id: str, stage: str, n: int) -> None:
        if scene_id in self.tasks:
            self.progress.advance(self.tasks[scene_id], n)


def run_batch(inputs: list[str], model: str, out_dir: Path, *, labels: Optional[str],
              overrides: dict, config: Optional[Path], debug: bool) -> tuple[int, list]:
    """Validate everything up front (exit 2), then segment; returns (exit code, outcomes)."""
    environment.configure(debug)
    from pipeline.bundle import load_bundle
    from pipeline.config import load_run_options
    from pipeline.scenes import discover, match_labels
    from segcore.errors import SegpipeError

    try:
        options = load_run_options(config, overrides)
        scenes = discover(inputs)
        label_map = match_labels(scenes, labels)
        bundle = load_bundle(model)
        bundle.build()  # an unreadable model is caught before any work starts
    except SegpipeError as exc:
        if debug:
            traceback.print_exc()
        raise _fail(str(exc)) from None

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.segment_scene import segment_batch
    from pipeline.progress import progress_sink

    if not debug:
        environment.silence_library_logs()

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("tiles"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress, \
            progress_sink(RichProgress(progress)), \
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        try:
            result = segment_batch(scenes, bundle, options, Path(out_dir), label_map)
        except SegpipeError as exc:  # e.g. workers the cluster cannot place: nothing ran
            if debug:
                traceback.print_exc()
            raise _fail(str(exc)) from None
    for outcome in result.outcomes:
        if outcome.status == "ok":
            err.print(f"[green]ok[/]     {outcome.scene_id}  {outcome.seconds:.1f} s  {outcome.report}")
        else:
            err.print(f"[bold red]failed[/] {outcome.scene_id}: {outcome.reason}", soft_wrap=True)
            if debug and outcome.scene_id in result.errors:
                exc = result.errors[outcome.scene_id]
                traceback.print_exception(type(exc), exc, exc.__traceback__)
    code = EXIT_SOME_FAILED if result.failed else EXIT_OK
    return code, result.outcomes


@app.command()
def run(
    inputs: Annotated[list[str], typer.Argument(help="GeoTIFF/NIfTI files or directories.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Bundled model name or bundle directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    labels: Annotated[Optional[str], typer.Option(help="Ground truth file or directory.")] = None,
    bands: Annotated[Optional[str], typer.Option(help="1-based input bands, e.g. 4,3,2.")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Tile core size (pixels).")] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Halo per side (pixels).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Tiles per model call.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Model actors (default: one per GPU/CPU).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per actor (0 on CPU).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(envvar="RAY_ADDRESS", help="Join this Ray cluster.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of run options.")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Recompute every tile.")] = False,
    spacing: Annotated[Optional[str], typer.Option(
        help="Volumes whose voxel spacing differs from the model's: resample (default), "
             "refuse or ignore.")] = None,
    scenes_in_flight: Annotated[Optional[int], typer.Option(
        help="Scenes/volumes processed at once (default 2).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and library logs.")] = False,
) -> None:
    """Segment scenes with a model; write Zarr, COGs/NIfTI and reports per scene."""
    from pipeline.config import parse_bands
    from pipeline.spacing import SpacingPolicy
    from segcore.errors import SegpipeError
    from segcore.hints import parse_choice

    try:
        band_list = parse_bands(bands)
        policy = None if spacing is None else parse_choice(SpacingPolicy, spacing, name="--spacing")
    except SegpipeError as exc:
        raise _fail(str(exc)) from None
    overrides = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "workers": workers,
                 "gpus_per_worker": gpus_per_worker, "bands": band_list,
                 "ray_address": ray_address, "resume": False if no_resume else None,
                 "spacing": policy, "scenes_in_flight": scenes_in_flight}
    code, _ = run_batch(inputs, model, out, labels=labels, overrides=overrides, config=config,
                        debug=debug)
    raise typer.Exit(code)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("demo-out"),
    size: Annotated[int, typer.Option(help="Scene side in pixels (>= 4096 for the real demo).")] = 4096,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic scene.")] = 2026,
    medical: Annotated[bool, typer.Option(
        "--medical", help="Segment a synthetic archive of phantom NIfTI volumes with "
                          "demo-medical instead.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and library logs.")] = False,
) -> None:
    """Generate a synthetic satellite scene (or phantom archive), segment it, print a summary."""
    import json
    import time

    from pipeline.demo import ensure_demo_scene, ensure_medical_archive

    start = time.perf_counter()
    if medical:
        err.print(f"writing a synthetic archive of 4 phantom volumes (seed {seed}) ...")
        archive, truth = ensure_medical_archive(out / "inputs", seed=seed)
        code, outcomes = run_batch([str(archive)], "demo-medical", out, labels=str(truth),
                                   overrides={}, config=None, debug=debug)
    else:
        err.print(f"generating a {size} x {size} synthetic scene (seed {seed}) ...")
        image, truth = ensure_demo_scene(out / "inputs", size=size, seed=seed)
        code, outcomes = run_batch([str(image)], "demo-satellite", out, labels=str(truth),
                                   overrides={}, config=None, debug=debug)
    for outcome in outcomes:
        if outcome.status == "ok":
            report = json.loads(Path(outcome.report).read_text())
            stdout.print(summary_table(report))
            stdout.print(f"report: {Path(outcome.report).with_suffix('.html')}")
    stdout.print(f"demo wall time: {time.perf_counter() - start:.1f} s")
    raise typer.Exit(code)


def summary_table(report: dict) -> Table:
    """The per-class summary of a report as a rich table."""
    volume = report.get("kind") == "nifti"
    unit = "voxels" if volume else "px"
    table = Table(title=f"{report['scene_id']}  ({' x '.join(map(str, report['shape']))} {unit}, "
                        f"{report['timings_s']['total']:.1f} s)")
    metrics_all = report.get("metrics") or {}
    sem = (metrics_all.get("semantic") or {}).get("per_class", {})
    surface = metrics_all.get("surface") or {}
    cols = ["class", unit, "share %", "volume mL" if volume else "area km²", "IoU", "Dice"]
    cols += ["HD95 mm"] if surface else []
    for col in cols:
        table.add_column(col, justify="left" if col == "class" else "right")
    classes = report["summary"]["classes"]
    total = sum(c["pixels"] for c in classes.values()) or 1
    for name, c in classes.items():
        m = sem.get(name, {})
        size = f"{c['volume_ml']:,.2f}" if volume else f"{c['area_m2'] / 1e6:,.3f}"
        row = [name, f"{c['pixels']:,}", f"{100 * c['pixels'] / total:.1f}", size,
               _num(m.get("iou")), _num(m.get("dice"))]
        if surface:
            row.append(_num((surface.get(name) or {}).get("hd95_mm")))
        table.add_row(*row)
    metrics = (report.get("metrics") or {}).get("semantic")
    if metrics:
        table.caption = f"mIoU {metrics['miou']:.4f}   Dice {metrics['dice']:.4f}"
    return table


def _num(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.4f}"


@app.command()
def models() -> None:
    """List the bundled models."""
    from pipeline.bundle import bundled_models, load_bundle

    table = Table(title="bundled models")
    for col in ("name", "architecture", "bands", "classes", "tile", "held-out"):
        table.add_column(col, no_wrap=col == "name")
    for name in bundled_models():
        spec = load_bundle(name).spec
        figures = ", ".join(f"{k} {v:.3f}" for k, v in ((spec.training or {}).get("heldout") or {}).items()
                            if isinstance(v, float))
        table.add_row(name, spec.architecture or spec.format.value, str(spec.input.channels),
                      ", ".join(spec.class_names), str(spec.tile), figures)
    stdout.print(table)


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Training YAML (see configs/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    steps: Annotated[Optional[int], typer.Option(help="Override the number of steps.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Train a built-in architecture and write a model bundle."""
    from pipeline.train import load_train_config, train_bundle
    from segcore.errors import SegpipeError

    try:
        cfg = load_train_config(config, {"steps": steps})
    except SegpipeError as exc:
        raise _fail(str(exc)) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("training", total=cfg.steps, loss="")

        def on_step(step: int, loss: float) -> None:
            progress.update(bar, completed=step, loss=f"loss {loss:.4f}")

        try:
            bundle = train_bundle(cfg, out, on_step=on_step)
        except SegpipeError as exc:
            if debug:
                traceback.print_exc()
            raise _fail(str(exc)) from None
    held = (bundle.spec.training or {}).get("heldout", {})
    out_text = ", ".join(f"{k} {v:.4f}" for k, v in held.items() if isinstance(v, float))
    err.print(f"wrote {bundle.path}  held-out: {out_text}")


def main() -> None:
    """Entry point of the ``segpipe`` script."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
