"""Fixed cost of one ``segpipe run``: wall time of the command minus the scene's own time.

    .venv/bin/python bench/startup.py [--runs 2] [--size 485x373] [--workers N]
                                      [--executors auto ray] [--compare-with DIR]

Writes a small synthetic GeoTIFF, then runs ``segpipe run`` on it ``--runs`` times,
each in a fresh process with a fresh output directory (nothing reused), a private
``PREFECT_HOME`` and ``RAY_TMPDIR``. Per run it prints the wall time of the process,
the report's ``timings_s.total`` (the scene), their difference (the fixed cost;
the goal is at most 5 s), and the CPU seconds of the process tree (load-independent).

``--executors`` runs the command once per executor per run (``auto`` runs a small scene
in the command's own process, ``ray`` starts a local Ray runtime and its actors), so
the two are compared on the same load.

Each run also records a timeline from inside the process (the functions below are
wrapped, nothing else changes) and prints where the fixed cost goes:

- ``start``: interpreter start and ``import flows.cli``;
- ``checks``: importing the pipeline and checking inputs, labels, model and ``--out``
  (main thread);
- ``pool``: starting the model workers after the checks: loading the model in this
  process (``local``), or handing over to the Ray thread and waiting for it (``ray``);
- ``ray``: starting the local Ray runtime (background thread; starts with the checks);
- ``actors``: starting the model actors and loading the model in each (background);
- ``wait``: the main thread waiting for Ray and the actors after its checks;
- ``scenes``: the scene work (the report's total is part of it);
- ``stop``: from stopping the actors to the end of the process, of which ``stop_actors``
  (killing the actors), ``stop_ray`` (stopping the local runtime) and ``exit`` (the
  interpreter's own exit).

``--compare-with DIR`` runs the same command (the first of ``--executors``) with an
older source tree first on ``PYTHONPATH`` (e.g. ``git archive HEAD | tar -x -C /tmp/old``), so the two are
compared in one session on the same load; only its wall/scene/fixed figures print.
Figures from a loaded machine are noisy: compare ratios from one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMELINE_ENV = "SEGPIPE_BENCH_TIMELINE"

def _child() -> None:
    """Run ``segpipe`` (argv) in this process with its phases stamped (time.time()).

    Only light modules are patched up front; :mod:`flows.batch` (which imports the
    pipeline) is patched once the command has imported it, so the timeline keeps the
    imports where the command does them.
    """
    import functools

    t_main = time.time()
    events: dict[str, list[float]] = {}

    def stamp(name: str, f):
        @functools.wraps(f)
        def wrapped(*args, **kwargs):
            events.setdefault(name, []).append(time.time())
            try:
                return f(*args, **kwargs)
            finally:
                events[name].append(time.time())
        return wrapped

    import flows.cli

    events["imported"] = [t_main, time.time()]
    try:
        from flows import ray_start
    except ImportError:  # an older tree: only wall and scene times
        ray_start = None
    if ray_start is not None:
        flows.cli._prepare = stamp("prepare", flows.cli._prepare)
        ray_start._start = stamp("ray", ray_start._start)
        submit_pool, start_pool = ray_start.RayStart.start_pool, ray_start._start_pool

        def checks_done(self, bundle, options):
            events["checks_done"] = [time.time()]
            return submit_pool(self, bundle, options)

        def actors(*args, **kwargs):  # on the Ray thread; the main thread waits for it
            events["actors"] = [time.time()]
            pool = start_pool(*args, **kwargs)
            events["actors"].append(time.time())
            from flows import batch

            pool.shutdown = stamp("pool_shutdown", pool.shutdown)
            batch.segment_scenes = stamp("scenes", batch.segment_scenes)
            return pool

        ray_start.RayStart.start_pool = checks_done
        ray_start.RayStart.close = stamp("close", ray_start.RayStart.close)
        ray_start._start_pool = actors
    if hasattr(flows.cli, "_start_pool"):  # the executor choice: local pool or Ray
        start_any = flows.cli._start_pool

        def any_pool(*args, **kwargs):
            events.setdefault("checks_done", [time.time()])
            events["pool"] = [time.time()]
            pool = start_any(*args, **kwargs)
            events["pool"].append(time.time())
            from flows import batch

            if "pool_shutdown" not in events and not hasattr(batch.segment_scenes, "__wrapped__"):
                pool.shutdown = stamp("pool_shutdown", pool.shutdown)  # once, whichever path
                batch.segment_scenes = stamp("scenes", batch.segment_scenes)
            return pool

        flows.cli._start_pool = any_pool
    sys.argv = ["segpipe", *sys.argv[2:]]
    try:
        flows.cli.main()
    finally:
        events["exit"] = [time.time()]
        Path(os.environ[TIMELINE_ENV]).write_text(json.dumps(events))


def write_scene(path: Path, height: int, width: int) -> Path:
    from pipeline.synthdata.satellite import write_scene as render
    from segcore.synthetic.satellite import SatelliteSceneSpec

    render(path, spec=SatelliteSceneSpec(seed=11, height=height, width=width, bands=3))
    return path


def one_run(scene: Path, work: Path, tag: str, source: Path | None,
            workers: int | None = None, executor: str | None = None) -> dict:
    """One ``segpipe run`` in a fresh process; wall, scene total, CPU and timeline."""
    out, timeline = work / f"out-{tag}", work / f"timeline-{tag}.json"
    env = {**os.environ, "PREFECT_HOME": str(work / f"prefect-{tag}"),
           "RAY_TMPDIR": str(work / "ray"), TIMELINE_ENV: str(timeline)}
    env.pop("RAY_ADDRESS", None)
    env.pop("PREFECT_API_URL", None)
    (work / "ray").mkdir(exist_ok=True)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    args = ["run", str(scene), "--model", "demo-satellite", "--out", str(out), "--no-resume"]
    args += ["--workers", str(workers)] if workers else []
    args += ["--executor", executor] if executor else []
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=900,
                          check=False)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"segpipe run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((out / scene.stem / "report.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    events = json.loads(timeline.read_text()) if timeline.is_file() else {}
    return {"wall": end - start, "scene": report["timings_s"]["total"], "cpu": cpu,
            "phases": phases(events, start, end), "prefect_home": (work / f"prefect-{tag}").exists()}


def phases(ev: dict, launch: float, end: float) -> dict[str, float]:
    """Durations of the phases named in the module docstring (seconds)."""
    if "prepare" not in ev:
        return {}
    span = lambda name: ev[name][-1] - ev[name][0] if name in ev else float("nan")
    checks_end = ev["checks_done"][0] if "checks_done" in ev else float("nan")
    out = {"start": ev["imported"][1] - launch,
           "checks": checks_end - ev["prepare"][0],
           "pool": span("pool"), "ray": span("ray"), "actors": span("actors"),
           "wait": ev["prepare"][1] - checks_end,
           "scenes": span("scenes"),
           "stop": end - (ev["pool_shutdown"][0] if "pool_shutdown" in ev else ev["exit"][0]),
           "stop_actors": span("pool_shutdown"), "stop_ray": span("close"),
           "exit": end - ev["exit"][0]}
    if "ray" in ev:
        out["ray_began_after_main_s"] = ev["ray"][0] - ev["imported"][1]
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--size", default="485x373", help="HEIGHTxWIDTH of the scene")
    parser.add_argument("--workers", type=int, default=None,
                        help="--workers of the command (default: its own default)")
    parser.add_argument("--executors", nargs="+", default=["auto", "ray"],
                        help="--executor values to run, each once per run")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="an older source tree to run first on PYTHONPATH")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    (ROOT / ".bench").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".bench", prefix="startup-") as tmp:
        work = Path(tmp)
        scene = write_scene(work / "small.tif", height, width)
        print(f"scene {height} x {width}; load average {os.getloadavg()[0]:.1f}; "
              f"{os.cpu_count()} CPUs")
        print(f"{'run':<10}{'wall s':>8}{'scene s':>9}{'fixed s':>9}{'cpu s':>8}  phases (s)")
        for i in range(args.runs):
            plans = ([("old", args.compare_with, args.executors[0])]  # the same command
                     if args.compare_with else [])
            plans += [(executor, None, executor) for executor in args.executors]
            for name, source, executor in plans:
                r = one_run(scene, work, f"{name}{i}", source, args.workers, executor)
                detail = "  ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
                prefect = "  (Prefect home created)" if r["prefect_home"] else ""
                print(f"{name + str(i + 1):<10}{r['wall']:>8.2f}{r['scene']:>9.2f}"
                      f"{r['wall'] - r['scene']:>9.2f}{r['cpu']:>8.1f}  {detail}{prefect}",
                      flush=True)


if __name__ == "__main__":
    main()
