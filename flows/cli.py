"""The ``segpipe`` command line (reference: ``docs/cli.md``).

Exit codes (:class:`flows.exit_codes.ExitCode`): 0 every scene succeeded; 1 some
scenes failed and the rest completed; 2 the command was unusable (bad flag, no
input, unreadable model) and no work was started; 3 an unexpected internal error.
Problems are one line each; ``--debug`` adds tracebacks.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows import environment
from flows.exit_codes import ExitCode

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="segpipe: seamless segmentation of huge GeoTIFF scenes and NIfTI volumes.")
err = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)



def _fail(message: str, code: int = ExitCode.UNUSABLE) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(int(code))


@contextmanager
def unusable_on_error(debug: bool = False) -> Iterator[None]:
    """A segpipe error inside the block is one line and exit 2 (traceback with --debug)."""
    from segcore.errors import SegpipeError

    try:
        yield
    except SegpipeError as exc:
        if debug:
            traceback.print_exc()
        raise _fail(str(exc)) from None


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


def _prepare(ray_start, inputs: list[str], model: str, out_dir: Path | str,
             labels: str | None, options, debug: bool) -> tuple:
    """Check inputs, labels, model and ``--out`` (exit 2), then start the model actors and
    wait for them (exit 2 when Ray or the actors cannot start); returns
    ``(pool, (scenes, label_map, bundle, out_dir, skipped))``."""
    from pipeline.bundle import load_bundle
    from pipeline.discovery import find, match_labels
    from pipeline.run.workspace import prepare_out_dir

    with unusable_on_error(debug):
        found = find(inputs)
        scenes = found.scenes
        label_map = match_labels(scenes, labels)
        bundle = load_bundle(model)
        out_dir = prepare_out_dir(out_dir)
        if options.prompts is not None:  # open-vocabulary: a run-specific bundle copy
            import tempfile  # a run-specific copy stays local when --out is s3://

            from pipeline.prompts import bundle_with_prompts

            home = out_dir / ".prompts" if isinstance(out_dir, Path) else \
                Path(tempfile.mkdtemp(prefix="segpipe-prompts-"))
            bundle = bundle_with_prompts(bundle, options.prompts, home)
        bundle.build()  # an unreadable model is caught before any work starts
        pool = _start_pool(ray_start, scenes, bundle, options)
    return pool, (scenes, label_map, bundle, out_dir, found.skipped)


def _start_pool(ray_start, scenes, bundle, options):
    """The model in this process for small runs, else Ray's actors (started in the
    background already, or now); exit 2 when Ray or the actors cannot start."""
    from pipeline.executor import choose_executor
    from pipeline.options import Executor

    if choose_executor(options, scenes) is Executor.LOCAL:
        from pipeline.inference.local_pool import LocalPool

        return LocalPool(str(bundle.path), batch_size=options.batch_size,
                         gpus_per_worker=options.gpus_per_worker)
    ray_start.start_pool(bundle, options)
    return ray_start.pool()  # e.g. workers the cluster cannot place: nothing ran


def run_batch(inputs: list[str], model: str, out_dir: Path | str, *, labels: Optional[str],
              overrides: dict, config: Optional[Path], debug: bool) -> tuple[int, list]:
    """Validate everything up front (exit 2) while Ray starts in the background, then
    segment in plain Python (no Prefect); returns (exit code, outcomes)."""
    environment.configure(debug)
    from flows.ray_start import begin
    from pipeline.options import load_run_options

    with unusable_on_error(debug):
        options = load_run_options(config, overrides)
    from pipeline.executor import likely_local

    ray_start = begin(inputs, out_dir, options.ray_address, quiet=not debug,
                      local=likely_local(inputs, options))
    try:
        pool, (scenes, label_map, bundle, out_dir, skipped) = _prepare(
            ray_start, inputs, model, out_dir, labels, options, debug)
    except BaseException:
        ray_start.abandon()  # nothing ran: stop what was started for it
        raise
    from flows.batch import segment_scenes
    from pipeline.progress import progress_sink

    if not debug:
        environment.silence_library_logs()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("tiles"), TimeElapsedColumn())
    try:
        try:
            with Progress(*columns, console=err, transient=False) as progress, \
                    progress_sink(RichProgress(progress)):
                result = segment_scenes(scenes, bundle, options, out_dir, label_map, pool=pool,
                                        skipped=skipped)
        finally:
            pool.shutdown()
        _print_outcomes(result, debug)
    finally:
        ray_start.close()  # the local runtime started for this command, if any
    return ExitCode.for_rows(result.outcomes), result.outcomes


def _print_outcomes(result, debug: bool) -> None:
    for outcome in result.outcomes:
        if outcome.labels_unusable:  # published without metrics: exit 1
            err.print(f"[yellow]ok[/]     {outcome.scene_id}  {outcome.seconds:.1f} s  "
                      f"{outcome.report}; {outcome.reason}", soft_wrap=True)
        elif outcome.ok:
            err.print(f"[green]ok[/]     {outcome.scene_id}  {outcome.seconds:.1f} s  {outcome.report}")
        else:
            err.print(f"[bold red]failed[/] {outcome.scene_id}: {outcome.reason}", soft_wrap=True)
            if debug and outcome.scene_id in result.errors:
                exc = result.errors[outcome.scene_id]
                traceback.print_exception(type(exc), exc, exc.__traceback__)
    if result.skipped:  # junk and non-image DICOM objects: listed, never an exit code
        err.print(f"skipped {len(result.skipped)} row(s) of files that are no scene (not "
                  "DICOM, unreadable or not an image): see batch.csv", soft_wrap=True)


@app.command()
def run(
    inputs: Annotated[list[str], typer.Argument(
        help="GeoTIFF/NIfTI files, STAC item/catalog .json files or directories (local, or s3://bucket/key and s3:// prefixes).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Bundled model name or bundle directory.")],
    out: Annotated[str, typer.Option("--out", "-o",
                                     help="Output directory, or s3://bucket/prefix.")],
    labels: Annotated[Optional[str], typer.Option(help="Ground truth file or directory.")] = None,
    bands: Annotated[Optional[str], typer.Option(
        help="1-based input bands, e.g. 4,3,2; STAC items: band names, e.g. red,green,blue.")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Tile core size (pixels).")] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Halo per side (pixels).")] = None,
    halo_mode: Annotated[Optional[str], typer.Option(
        help="Halo without --overlap: exact or effective (default: effective for 3-D models).")] = None,
    memory_budget: Annotated[Optional[str], typer.Option(
        help="Memory one model window may take, e.g. 4GiB (3-D tiles are sized to fit).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Tiles per model call.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Model actors (default: one per GPU/CPU).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per actor (0 on CPU).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(envvar="RAY_ADDRESS", help="Join this Ray cluster.")] = None,
    executor: Annotated[Optional[str], typer.Option(
        help="Where the work runs: auto (in this process for small inputs, else Ray), "
             "local or ray.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of run options.")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Recompute every tile.")] = False,
    spacing: Annotated[Optional[str], typer.Option(
        help="Volumes whose voxel spacing differs from the model's: resample (default), "
             "refuse or ignore.")] = None,
    scenes_in_flight: Annotated[Optional[int], typer.Option(
        help="Scenes/volumes processed at once (default 2).")] = None,
    prompts: Annotated[Optional[str], typer.Option(
        help="Open-vocabulary models: comma-separated text prompts that become the classes, "
             "e.g. 'water,road,building'.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and library logs.")] = False,
) -> None:
    """Segment scenes with a model; write Zarr, COGs/NIfTI and reports per scene."""
    from pipeline.options import parse_bands, parse_prompts
    from pipeline.spacing import SpacingPolicy
    from segcore.hints import parse_choice

    with unusable_on_error(debug):
        band_list = parse_bands(bands)
        prompt_list = parse_prompts(prompts)
        policy = None if spacing is None else parse_choice(SpacingPolicy, spacing, name="--spacing")
    overrides = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "workers": workers,
                 "halo_mode": halo_mode, "memory_budget": memory_budget,
                 "gpus_per_worker": gpus_per_worker, "bands": band_list,
                 "ray_address": ray_address, "executor": executor, "resume": False if no_resume else None,
                 "spacing": policy, "scenes_in_flight": scenes_in_flight,
                 "prompts": prompt_list}
    code, _ = run_batch(inputs, model, out, labels=labels, overrides=overrides, config=config,
                        debug=debug)
    raise typer.Exit(int(code))


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
    import time

    from pipeline.synthdata.demo import ensure_demo_scene, ensure_medical_archive

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
    from pipeline.report.model import SceneReport

    for outcome in outcomes:
        if outcome.ok:
            stdout.print(summary_table(SceneReport.read(Path(outcome.report))))
            stdout.print(f"report: {Path(outcome.report).with_suffix('.html')}")
    stdout.print(f"demo wall time: {time.perf_counter() - start:.1f} s")
    raise typer.Exit(int(code))


def summary_table(report) -> Table:
    """The per-class summary of a :class:`~pipeline.report.model.SceneReport` as a table."""
    from pipeline.report.model import SizeUnit

    classes = report.summary.classes
    volume = any(c.unit is SizeUnit.VOLUME_ML for c in classes.values())
    unit = "voxels" if volume else "px"
    table = Table(title=f"{report.scene_id}  ({' x '.join(map(str, report.shape))} {unit}, "
                        f"{report.timings_s.total:.1f} s)")
    metrics = report.scores  # None without labels or when they were unusable
    sem = metrics.semantic.per_class if metrics else {}
    surface = (metrics.surface if metrics else None) or {}
    cols = ["class", unit, "share %", "volume mL" if volume else "area km²", "IoU", "Dice"]
    cols += ["HD95 mm"] if surface else []
    for col in cols:
        table.add_column(col, justify="left" if col == "class" else "right")
    total = sum(c.pixels for c in classes.values()) or 1
    for name, c in classes.items():
        m = sem.get(name)
        size = f"{c.size:,.2f}" if volume else f"{c.size / 1e6:,.3f}"
        row = [name, f"{c.pixels:,}", f"{100 * c.pixels / total:.1f}", size,
               _num(m.iou if m else None), _num(m.dice if m else None)]
        if surface:
            row.append(_num(surface[name].hd95_mm if name in surface else None))
        table.add_row(*row)
    if metrics:
        table.caption = f"mIoU {metrics.semantic.miou:.4f}   Dice {metrics.semantic.dice:.4f}"
    elif report.metrics_error:
        table.caption = f"no metrics: labels unusable: {report.metrics_error}"
    return table


def _num(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.4f}"


models_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                         help="List the bundled models; `inspect` describes any model.")
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the bundled models (`segpipe models inspect MODEL` describes one)."""
    if ctx.invoked_subcommand is not None:
        return
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


@models_app.command("inspect")
def models_inspect(
    model: Annotated[str, typer.Argument(
        help="Anything --model takes: a bundled name, a bundle directory, an .onnx file, "
             "a MONAI bundle or a STAC MLM item.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Print what a run will do with MODEL: inputs, normalisation, classes, tile, halo,
    receptive field, device (nothing runs)."""
    from pipeline.model_inspect import inspect_model, render

    if not debug:
        environment.silence_library_logs()
    with unusable_on_error(debug):
        info = inspect_model(model)
    if json_output:
        typer.echo(info.model_dump_json(indent=2))
    else:
        render(info, stdout)


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Training YAML (see configs/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    steps: Annotated[Optional[int], typer.Option(help="Override the number of steps.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the checkpoint an interrupted run left beside --out.")] = False,
    export: Annotated[Optional[str], typer.Option(
        help="Bundle format: state_dict (default), torchscript or export.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Train a built-in architecture (open-vocabulary ones included, see
    configs/demo-openvocab.yaml) and write a model bundle (checkpoints every
    ``checkpoint_every`` steps; ``--resume`` continues an interrupted run)."""
    from pipeline.training import load_train_config, train_bundle

    with unusable_on_error(debug):
        cfg = load_train_config(config, {"steps": steps, "export": export})
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("training", total=cfg.steps, loss="")

        def on_step(step: int, loss: float) -> None:
            progress.update(bar, completed=step, loss=f"loss {loss:.4f}")

        with unusable_on_error(debug):
            bundle = train_bundle(cfg, out, on_step=on_step, resume=resume)
    held = (bundle.spec.training or {}).get("heldout", {})
    out_text = ", ".join(f"{k} {v:.4f}" for k, v in held.items() if isinstance(v, float))
    err.print(f"wrote {bundle.path}  held-out: {out_text}")


# --- segpipe nightly / segpipe config -------------------------------------------------------

# settings key -> the flag that sets it (error messages and `config show` name the flag)
_NIGHTLY_FLAGS = {"inbox": "--inbox", "out": "--out", "model": "--model",
                  "schedule.cron": "--cron", "schedule.timezone": "--timezone",
                  "run.workers": "--workers", "run.gpus_per_worker": "--gpus-per-worker",
                  "run.ray_address": "--ray-address", "run.tile": "--tile",
                  "run.scenes_in_flight": "--scenes-in-flight", "log_level": "--log-level"}


def _settings(config: Optional[Path], flags: dict, debug: bool):
    """Effective settings (flags > SEGPIPE_* env > config file > defaults) or exit 2."""
    from flows.settings import load_settings

    with unusable_on_error(debug):
        return load_settings(config, flags, flag_names=_NIGHTLY_FLAGS)


def _required(settings, name: str) -> str:
    value = getattr(settings, name)
    if value is None:
        raise _fail(f"{_NIGHTLY_FLAGS[name]} is required: pass it, set SEGPIPE_{name.upper()} "
                    f"or '{name}:' in the config file (--config / SEGPIPE_CONFIG)")
    return str(value)


def _print_pass(result: dict) -> None:
    for o in result["outcomes"]:
        if o["status"] == "ok":
            how = "reused  " if o["reused"] else "computed"
            note = f"; {o['reason']}" if o["reason"] else ""  # labels unusable
            err.print(f"[green]ok[/]     {o['scene_id']}  {how}  {o['report']}{note}",
                      soft_wrap=True)
        else:
            err.print(f"[bold red]failed[/] {o['scene_id']}: {o['reason']}", soft_wrap=True)
    err.print(f"{result['scenes']} scenes: {result['computed']} computed, {result['reused']} "
              f"reused, {result['failed']} failed  ({result['batch']})")


@app.command()
def nightly(
    inbox: Annotated[Optional[Path], typer.Option(help="Directory scanned for scenes "
                                                       "[setting inbox].")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory "
                                                                    "[setting out].")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Bundled model name or "
                                                 "bundle directory [setting model].")] = None,
    cron: Annotated[Optional[str], typer.Option(
        help="Cron expression of the schedule (default '0 2 * * *') [schedule.cron].")] = None,
    timezone: Annotated[Optional[str], typer.Option(
        help="IANA time zone of the cron (default UTC) [schedule.timezone].")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one pass now and exit.")] = False,
    labels: Annotated[Optional[str], typer.Option(help="Directory of label files by scene id.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Model actors [run.workers].")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(
        help="GPUs per actor [run.gpus_per_worker].")] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        help="Join this Ray cluster [run.ray_address].")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Tile core size [run.tile].")] = None,
    scenes_in_flight: Annotated[Optional[int], typer.Option(
        help="Scenes processed at once [run.scenes_in_flight].")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="Settings file (YAML/TOML); default $SEGPIPE_CONFIG.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and library logs.")] = False,
) -> None:
    """Serve the nightly schedule (or run one pass with --once): segment every scene in the
    inbox not already finished with the same model and settings."""
    environment.configure(debug)
    from pipeline.watchdog import guard_children

    guard_children()  # Prefect's temporary server (and Ray's processes) die with this one
    flags = {"inbox": inbox, "out": out, "model": model, "schedule.cron": cron,
             "schedule.timezone": timezone, "run.workers": workers,
             "run.gpus_per_worker": gpus_per_worker, "run.ray_address": ray_address,
             "run.tile": tile, "run.scenes_in_flight": scenes_in_flight}
    settings = _settings(config, flags, debug).settings
    inbox_s, out_s, model_s = (_required(settings, k) for k in ("inbox", "out", "model"))
    options = settings.run.overrides()
    from flows.nightly import nightly_schedule, prepare, serve_nightly

    with unusable_on_error(debug):
        schedule = nightly_schedule(settings.schedule.cron, settings.schedule.timezone)
        prepare(inbox_s, out_s, model_s, options, labels)
    if not once:
        import logging

        logging.getLogger("prefect").setLevel(settings.log_level.value)
        err.print(f"serving {model_s} on {inbox_s} -> {out_s}: cron '{schedule.cron}' "
                  f"({schedule.timezone}); Ctrl-C stops")
        serve_nightly(inbox_s, out_s, model_s, options=options, labels=labels,
                      cron=settings.schedule.cron, timezone=settings.schedule.timezone)
        return
    raise typer.Exit(_nightly_once(inbox_s, out_s, model_s, options, labels, debug))


def _nightly_once(inbox: str, out: str, model: str, options: dict, labels: Optional[str],
                  debug: bool) -> int:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.nightly import nightly_pass

    if not debug:
        environment.silence_library_logs()
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), \
            unusable_on_error(debug):  # e.g. workers the cluster cannot place: nothing ran
        result = nightly_pass(inbox=inbox, out=out, model=model, options=options,
                              labels=labels)
    _print_pass(result)
    return int(result["exit_code"])


config_app = typer.Typer(no_args_is_help=True, help="Inspect segpipe's settings.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Annotated[Optional[Path], typer.Option(
        help="Settings file (YAML/TOML); default $SEGPIPE_CONFIG.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Print the effective settings as YAML, each value with where it came from."""
    from flows.settings import render_yaml

    typer.echo(render_yaml(_settings(config, {}, debug)), nl=False)


def main() -> None:
    """Entry point of the ``segpipe`` script.

    An error nobody anticipated is one line and exit 3 (its traceback with ``--debug``).
    Called from a script's top level (the ``segpipe`` script, ``python -m flows.cli``),
    the process then ends without the interpreter's module teardown
    (:mod:`flows.fast_exit`); called from other code (tests), it only raises SystemExit.
    """
    from flows import fast_exit

    entry = sys._getframe(1).f_globals.get("__name__") == "__main__"
    if entry:
        fast_exit.arm()
    try:
        _main()
    except SystemExit as done:
        if entry:
            fast_exit.record(done.code)
        raise


def _main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if "--debug" in sys.argv[1:]:
            traceback.print_exc()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {text} "
                  "(rerun with --debug for the traceback)", soft_wrap=True)
        sys.exit(int(ExitCode.INTERNAL))


if __name__ == "__main__":
    main()
