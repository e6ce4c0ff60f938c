"""Fuzz campaign over GeoTIFF and NIfTI inputs: no crash, no hang, no traceback, one line.

    .venv/bin/python bench/fuzz.py [--count 10000] [--seed 0] [--jobs 2]
                                   [--keep DIR] [--cli 20]

Writes tiny seed files with the project's own writers, mutates them ``--count`` times
(bit flips, boundary values, truncation, inserted and deleted byte runs, header fields;
see ``tests/pipeline/fuzzing.py``) and checks each mutant in a worker process (memory
limit, per-file deadline) the way ``segpipe run`` validates and ingests it. Prints the
files tried per format and mutation kind, the outcomes (ok / one-line error / finding),
files per second, the most common error lines and every finding; findings' mutants are
kept in ``--keep``.

``--cli N`` also runs N mutants (half GeoTIFF, half NIfTI) with two intact seeds through
the real command (``segpipe run DIR --model demo-satellite|demo-medical --executor
local``) and checks: exit code 0 or 1, no ``Traceback``, one stderr line per failed file,
and a report for every intact scene. Exit status: 1 when there is any finding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline.fuzzing import (
    FINDING,
    GEOTIFF,
    INPUT_ERROR,
    KINDS,
    NIFTI,
    OK,
    mutate,
    run_campaign,
    write_seeds,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="copy findings' mutants here")
    parser.add_argument("--cli", type=int, default=0, help="mutants run through segpipe run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segpipe-fuzz-") as tmp:
        seeds = write_seeds(Path(tmp) / "seeds")
        print(f"{len(seeds)} seeds: " + ", ".join(s.path.name for s in seeds))
        start = time.perf_counter()
        results = run_campaign(seeds, args.count, seed=args.seed, jobs=args.jobs,
                               workdir=Path(tmp), keep=args.keep, progress=True)
        seconds = time.perf_counter() - start
        findings = _print_campaign(results, seconds, args)
        if args.cli:
            findings += _cli_check(seeds, args.cli, args.seed, Path(tmp) / "cli")
    return 1 if findings else 0


def _print_campaign(results: list, seconds: float, args: argparse.Namespace) -> int:
    print(f"\n{len(results)} mutants (seed {args.seed}, {args.jobs} jobs) in {seconds:.1f} s: "
          f"{len(results) / seconds:.1f} files/s")
    counts = Counter((r.fmt, r.kind, r.outcome) for r in results)
    print(f"\n{'format':8} {'kind':9} {'tried':>6} {'ok':>6} {'1-line':>7} {'finding':>8}")
    for fmt in (GEOTIFF, NIFTI):
        for kind in (*KINDS, "all"):
            kinds = KINDS if kind == "all" else (kind,)
            row = [sum(counts[(fmt, k, o)] for k in kinds) for o in (OK, INPUT_ERROR, FINDING)]
            print(f"{fmt:8} {kind:9} {sum(row):6d} {row[0]:6d} {row[1]:7d} {row[2]:8d}")
    noisy = sum(1 for r in results if r.stderr_lines)
    print(f"\nchecks that wrote to stderr (library warnings, no traceback): {noisy}")
    lines = Counter(r.detail.split(":")[1].strip()[:60] if ":" in r.detail else r.detail
                    for r in results if r.outcome == INPUT_ERROR)
    print("most common error lines:")
    for text, n in lines.most_common(12):
        print(f"  {n:5d}  {text}")
    findings = [r for r in results if r.outcome == FINDING]
    print(f"\nfindings: {len(findings)}")
    for r in findings:
        print(f"  #{r.index} {r.fmt} {r.seed} {r.kind}: {r.detail}")
    return len(findings)


def _cli_check(seeds: list, count: int, seed: int, folder: Path) -> int:
    """``segpipe run`` over mutants beside intact scenes, per format; number of problems."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    problems = 0
    for fmt, model in ((GEOTIFF, "demo-satellite"), (NIFTI, "demo-medical")):
        inputs = folder / fmt / "in"
        inputs.mkdir(parents=True)
        mine = [s for s in seeds if s.fmt == fmt]
        good = [mine[0], mine[-1]] if fmt == NIFTI else [mine[0], mine[3]]
        for s in good:
            (inputs / f"good-{s.name}{s.suffix}").write_bytes(s.path.read_bytes())
        for i in range(count // 2):
            s = mine[int(rng.integers(len(mine)))]
            kind = KINDS[int(rng.integers(len(KINDS)))]
            data = mutate(s.path.read_bytes(), s, rng, kind)
            (inputs / f"m{i:02d}-{kind}-{s.name}{s.suffix}").write_bytes(data)
        problems += _run_cli(inputs, folder / fmt / "out", model, [f"good-{s.name}" for s in good])
    return problems


def _run_cli(inputs: Path, out: Path, model: str, good: list[str]) -> int:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1",
           "PREFECT_HOME": str(out.parent / "prefect")}
    start = time.perf_counter()
    proc = subprocess.run([str(ROOT / ".venv/bin/segpipe"), "run", str(inputs), "--model", model,
                           "--out", str(out), "--executor", "local"],
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    seconds = time.perf_counter() - start
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    failed_files = [ln for ln in lines if str(inputs) in ln]
    done = [g for g in good if (out / g / "report.json").exists()]
    batch = json.loads((out / "batch.json").read_text()) if (out / "batch.json").exists() else {}
    print(f"\nsegpipe run {model}: {len(list(inputs.iterdir()))} files, exit {proc.returncode}, "
          f"{seconds:.0f} s, {len(lines)} stderr lines ({len(failed_files)} naming an input), "
          f"intact scenes finished {len(done)}/{len(good)}, batch {batch.get('summary', '')}")
    for line in lines:
        print(f"  | {line[:200]}")
    bad = [proc.returncode not in (0, 1), "Traceback" in proc.stderr + proc.stdout,
           len(done) != len(good),
           len(failed_files) != len(set(failed_files))]
    if any(bad):
        print(f"  CLI check failed: exit/traceback/intact/duplicate lines = {bad}")
    return int(any(bad))


if __name__ == "__main__":
    sys.exit(main())
