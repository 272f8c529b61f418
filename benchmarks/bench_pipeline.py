"""End-to-end benchmark: ``hstred run`` against a plain serial script, same program.

The standard program (2 filters x 2 visits x 2 exposures, full frame, seed 1,
CTE trails on) is simulated once into ``DIR/program``. Each configuration then runs
as a separate process on a fresh copy of the raw files:

* ``plain``       benchmarks/plain_serial.py: the same libraries in the same order
                  with their default settings, one exposure at a time, on one core
                  (OMP_NUM_THREADS=1: arcticpy as PyPI ships it, built without OpenMP;
                  AstroDrizzle keeps its default process pool);
* ``plain-omp``   the same script with arcticpy's OpenMP threads on every core (the
                  OpenMP build hstred installs), for reference;
* ``hstred-1``    ``hstred run --workers 1``;
* ``hstred-2``    ``hstred run --workers 2``;
* ``rerun-2``     ``hstred run --workers 2`` again on the same directory, nothing changed;
* ``native-2``    ``hstred run --workers 2`` with the plain script's drizzle settings
                  (0.05"/pixel, pixfrac 1, exposure-time weights, detector orientation):
                  the same amount of drizzling, so the ratio shows the pipeline alone.

For each it prints the wall time and peak memory of the whole run and of each
stage. Memory is the summed proportional set size (PSS) of the process and all its
children, sampled every 0.25 s, so pages shared by forked workers count once; the
largest single-process RSS is printed beside it, then the main process's RSS / anonymous
RSS and the largest of any one worker (child) process. The anonymous part (RssAnon) leaves
out file pages, such as those of memory-mapped products, which the kernel can drop at will.
It then prints the ratios the targets are stated in (``TARGETS``: hstred-2 / plain wall
time, the drizzle stage's speed-up from one worker to two, peak memory, rerun / full run)
and whether hstred-1 and hstred-2 products are identical.

``--pointings NxM`` simulates a mosaic instead, ``--visits``, ``--exposures`` and
``--filters`` another program, and ``--no-cte`` leaves the CTE trails out and runs with
``--cte none``; these run the hstred configurations only, in a program directory of
their own. ``--tile-size N`` runs the hstred configurations with tiled final drizzles.

Usage: .venv/bin/python benchmarks/bench_pipeline.py [--dir DIR] [--only NAME ...]
       [--pointings NxM] [--visits N] [--exposures N] [--filters F,...] [--no-cte]
       [--tile-size N]
Results are also written to DIR/bench_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from astropy.io import fits

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
HSTRED = [PYTHON, "-m", "hstred"]
OUTNAME = "BENCH"
CONFIGS = ("plain", "plain-omp", "hstred-1", "hstred-2", "rerun-2", "native-2")
#: The targets the printed ratios are compared with.
TARGETS = {"e2e_ratio": 0.45, "drizzle_speedup": 1.7, "peak_pss_gb": 2.5, "rerun_percent": 5.0}
NATIVE_OPTIONS = ["--pixel-scale", "0.05", "--pixfrac", "1.0", "--weight-type", "EXP",
                  "--no-north-up"]


def _anonymous_rss(pid: int) -> int:
    """Resident anonymous memory of a process (bytes; Linux's RssAnon)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class MemorySampler(threading.Thread):
    """Samples the summed PSS, the largest RSS, the main process's RSS and anonymous RSS
    and the largest child's RSS and anonymous RSS of a process tree until it exits."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        # (epoch, pss sum, max rss, main rss, max child rss, main anon, max child anon)
        self.samples: list[tuple[float, ...]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            pss, rss, main, child, main_anon, child_anon = 0, 0, 0, 0, 0, 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    anon = _anonymous_rss(proc.pid)
                except (psutil.Error, OSError):
                    continue
                pss += info.pss
                rss = max(rss, info.rss)
                if proc.pid == self.root.pid:
                    main, main_anon = info.rss, anon
                else:
                    child, child_anon = max(child, info.rss), max(child_anon, anon)
            self.samples.append((time.time(), pss, rss, main, child, main_anon, child_anon))
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, ...]:
        """(peak PSS sum, peak single-process RSS, peak RSS of the main process, peak RSS
        of any one child process, the same two for anonymous memory alone) in GB between
        two epochs."""
        inside = [sample[1:] for sample in self.samples if start <= sample[0] <= end]
        if not inside:
            return (float("nan"),) * 6
        return tuple(max(sample[k] for sample in inside) / 1e9 for k in range(6))


def _measure(cmd: list[str], log: Path, env: dict | None = None
             ) -> tuple[float, float, MemorySampler, str]:
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, env=env)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        out, _ = proc.communicate()
    t1 = time.time()
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return t0, t1, sampler, out


#: The standard program: simulate options and their values.
STANDARD = {"visits": 2, "exposures": 2, "filters": "F606W,F814W", "pointings": "1x1"}


def _simulate(program: Path, options: dict, *, cte: bool) -> None:
    if sorted(program.glob("*_raw.fits")):
        return
    t0 = time.perf_counter()
    given = [a for key, value in options.items() for a in (f"--{key}", str(value))]
    subprocess.run([*HSTRED, "simulate", str(program), *given, "--seed", "1",
                    "--date", "2024-06-01", *(() if cte else ("--no-cte",))],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"simulated the program ({options}, CTE {'on' if cte else 'off'}) in "
          f"{time.perf_counter() - t0:.1f} s")


def _fresh_copy(program: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for raw in sorted(program.glob("*_raw.fits")):
        shutil.copyfile(raw, dest / raw.name)
    (dest / "crds").symlink_to(program / "crds")
    return dest


def _stage_rows(windows: dict[str, tuple[float, float]], sampler: MemorySampler) -> dict:
    rows = {}
    for stage, (start, end) in windows.items():
        rows[stage] = {"wall_s": end - start, **_peaks(sampler, start, end)}
    return rows


def run_plain(program: Path, root: Path, name: str, *, serial: bool) -> dict:
    data = program  # only read
    work = root / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if serial:
        env["OMP_NUM_THREADS"] = "1"
    t0, t1, sampler, out = _measure([PYTHON, str(HERE / "plain_serial.py"), str(data),
                                     str(work)], root / f"{name}.log", env=env)
    report = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(work, ignore_errors=True)  # several GB of working copies
    windows = {"startup": (t0, report["stages"]["inputs"][0])}
    windows.update({k: tuple(v) for k, v in report["stages"].items()})
    return _result(t0, t1, sampler, windows, products=[])


def run_hstred(program: Path, root: Path, name: str, workers: int, *, fresh: bool,
               options: tuple[str, ...] = (), data: Path | None = None) -> dict:
    data = data or root / f"hstred-{workers}"
    if fresh:
        _fresh_copy(program, data)
    t0, t1, sampler, _ = _measure([*HSTRED, "run", OUTNAME, "--data", str(data), "--workers",
                                   str(workers), "--quiet", *options], root / f"{name}.log")
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    starts, timings = record["stage_start_epoch_s"], record["timings_s"]
    first = min(starts.values())
    windows = {"startup": (t0, first)}
    windows.update({k: (s, s + timings[k]) for k, s in starts.items()})
    products = [data / p[k] for p in record["drizzle"]["products"] for k in ("sci", "wht")]
    result = _result(t0, t1, sampler, windows, products=products)
    result["skipped"] = record["skipped"]
    return result


_PEAKS = ("peak_pss_gb", "peak_rss_gb", "main_rss_gb", "child_rss_gb", "main_anon_gb",
          "child_anon_gb")


def _peaks(sampler: MemorySampler, start: float = 0.0, end: float = float("inf")) -> dict:
    return dict(zip(_PEAKS, sampler.peak(start, end), strict=True))


def _result(t0, t1, sampler: MemorySampler, windows, *, products) -> dict:
    return {"wall_s": t1 - t0, **_peaks(sampler), "stages": _stage_rows(windows, sampler),
            "products": products}


def _identical(a: list[str], b: list[str]) -> bool:
    for pa, pb in zip(sorted(a), sorted(b), strict=True):
        da, db = fits.getdata(pa), fits.getdata(pb)
        if da.shape != db.shape or not np.array_equal(da, db, equal_nan=True):
            return False
    return True


def _print(results: dict) -> None:
    print(f"\n{'run':<10} {'stage':<14} {'wall [s]':>9} {'peak PSS [GB]':>14} "
          f"{'max RSS [GB]':>13} {'main RSS/anon [GB]':>19} {'worker RSS/anon [GB]':>21}")
    for name, res in results.items():
        for stage, row in [*res["stages"].items(), ("TOTAL", res)]:
            print(f"{name:<10} {stage:<14} {row['wall_s']:9.1f} {row['peak_pss_gb']:14.2f} "
                  f"{row['peak_rss_gb']:13.2f} "
                  f"{row['main_rss_gb']:13.2f}/{row['main_anon_gb']:.2f} "
                  f"{row['child_rss_gb']:15.2f}/{row['child_anon_gb']:.2f}")
    print()
    plain, omp, h1, h2, again, native = (results.get(k) for k in CONFIGS)
    if plain and h2:
        print(f"hstred-2 / plain wall time: {h2['wall_s'] / plain['wall_s']:.2f} "
              f"(target <= {TARGETS['e2e_ratio']})")
    if omp and h2:
        print(f"hstred-2 / plain-omp wall time: {h2['wall_s'] / omp['wall_s']:.2f} "
              "(the plain script with arcticpy on every core)")
    if plain and h1:
        print(f"hstred-1 / plain wall time: {h1['wall_s'] / plain['wall_s']:.2f}")
    if plain and native:
        print(f"native-2 / plain wall time: {native['wall_s'] / plain['wall_s']:.2f} "
              "(same drizzle settings as the plain script)")
    if h1 and h2:
        print(f"hstred-1 / hstred-2 speed-up: {h1['wall_s'] / h2['wall_s']:.2f}x; products "
              f"identical: {_identical(h1['products'], h2['products'])}")
        d1, d2 = (r["stages"].get("drizzle") for r in (h1, h2))
        if d1 and d2:
            print(f"drizzle stage speed-up, 1 -> 2 workers: {d1['wall_s'] / d2['wall_s']:.2f}x "
                  f"(target >= {TARGETS['drizzle_speedup']})")
    for name in ("hstred-1", "hstred-2"):
        if results.get(name):
            print(f"{name} peak memory: {results[name]['peak_pss_gb']:.2f} GB PSS "
                  f"(target < {TARGETS['peak_pss_gb']} GB)")
    if h2 and again:
        print(f"unchanged re-run: {again['wall_s']:.1f} s = "
              f"{100 * again['wall_s'] / h2['wall_s']:.1f} % of the full run "
              f"(target < {TARGETS['rerun_percent']:g} %); "
              f"skipped: {again['skipped']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench_pipeline"),
                        help="working directory (the simulated program is kept there)")
    parser.add_argument("--only", nargs="+", choices=CONFIGS, default=None,
                        help="run only these configurations (rerun-2 needs hstred-2)")
    for key, value in STANDARD.items():
        parser.add_argument(f"--{key}", type=type(value), default=value,
                            help=f"simulate this instead of {value} (hstred configurations "
                                 "only)")
    parser.add_argument("--no-cte", action="store_true",
                        help="simulate without CTE trails and run with --cte none "
                             "(hstred configurations only)")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="run the hstred configurations with --tile-size N (tiled final "
                             "drizzles)")
    args = parser.parse_args(argv)
    options = {key: getattr(args, key) for key in STANDARD}
    standard = options == STANDARD and not args.no_cte
    only = args.only or [c for c in CONFIGS if standard or not c.startswith("plain")]
    if not standard and any(c.startswith("plain") for c in only):
        parser.error("the plain script runs the standard program only")
    root = args.dir.resolve()
    label = "_".join(str(v).replace(",", "+") for v in options.values())
    program = root / ("program" if standard else
                      f"program_{label}{'_nocte' if args.no_cte else ''}")
    program.mkdir(parents=True, exist_ok=True)
    _simulate(program, options, cte=not args.no_cte)
    extra = ("--cte", "none") if args.no_cte else ()
    if args.tile_size is not None:
        extra = (*extra, "--tile-size", str(args.tile_size))
    print(f"machine: {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load before start "
          f"{os.getloadavg()[0]:.2f}")
    results = {}
    for name in only:
        print(f"running {name} ...", flush=True)
        if name.startswith("plain"):
            results[name] = run_plain(program, root, name, serial=name == "plain")
        elif name == "rerun-2":
            results[name] = run_hstred(program, root, name, 2, fresh=False, options=extra)
        elif name == "native-2":
            results[name] = run_hstred(program, root, name, 2, fresh=True,
                                       options=(*NATIVE_OPTIONS, *extra), data=root / name)
        else:
            workers = int(name.split("-")[1])
            results[name] = run_hstred(program, root, name, workers, fresh=True,
                                       options=extra)
        print(f"  {results[name]['wall_s']:.1f} s, peak {results[name]['peak_pss_gb']:.2f} GB",
              flush=True)
    (root / "bench_pipeline.json").write_text(json.dumps(results, indent=1, default=str))
    _print(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
