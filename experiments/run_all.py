"""Regenerate every figure and CSV in ``paper_figures/`` with one command.

    python -m experiments.run_all            # full grids (see paper_figures/README.md for the time)
    python -m experiments.run_all --quick    # small grids: under 10 minutes on 2 cores
    python -m experiments.run_all --only exactness,truncation

Each script's ``main`` is called in turn (in this process, so numba kernels
compile once); its wall time is printed and recorded, with the mode and the
machine's core count, in ``run_all_times.csv`` in the output folder (one row
per script and mode, merged with earlier runs, and a ``total`` row per mode:
the sum of the scripts' times).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import sys

from .common import Stopwatch, output_dir, read_csv, write_csv

__all__ = ["SCRIPTS", "run_one", "main"]

#: Experiment modules in the order they run (``experiments.<name>``, each with ``main``).
SCRIPTS = ("bits_vs_kl", "runtime_vs_kl", "exactness", "truncation", "nongaussian", "model_params", "vae_digits",
           "learned_compression")


def run_one(name, quick=False, *, out_dir=None, tiny=False, progress=True):
    """Import ``experiments.<name>`` and call its ``main`` with the keywords it accepts.

    Returns
    -------
    (float, dict or None)
        Wall time in seconds and the summary ``main`` returned.
    """
    module = importlib.import_module(f"{__package__}.{name}")
    entry = getattr(module, "main", None)
    if entry is None:
        raise AttributeError(f"experiments.{name} has no main()")
    offered = {"quick": quick, "out_dir": out_dir, "tiny": tiny, "progress": progress}
    parameters = inspect.signature(entry).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        accepted = offered
    else:
        accepted = {k: v for k, v in offered.items() if k in parameters}
    if tiny and "tiny" not in accepted:
        raise TypeError(f"experiments.{name}.main does not accept tiny=True")
    with Stopwatch() as watch:
        summary = entry(**accepted)
    return watch.seconds, summary


def main(quick=False, *, out_dir=None, tiny=False, progress=True, only=None):
    """Run the experiments (all, or the names in ``only``); returns ``{name: seconds}``.

    A module that does not exist yet is reported and skipped; any other error
    propagates.
    """
    names = SCRIPTS if only is None else tuple(only)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; choose from {SCRIPTS}")
    out = output_dir(out_dir)
    mode = "tiny" if tiny else "quick" if quick else "full"
    times, rows = {}, []
    with Stopwatch() as total:
        for name in names:
            print(f"== experiments.{name} ({mode})", flush=True)
            try:
                seconds, summary = run_one(name, quick, out_dir=out, tiny=tiny, progress=progress)
            except ModuleNotFoundError as exc:
                if exc.name != f"{__package__}.{name}":
                    raise
                print(f"   skipped: experiments/{name}.py does not exist", flush=True)
                rows.append({"script": name, "mode": mode, "seconds": "", "status": "missing"})
                continue
            for key, value in (summary or {}).items():
                print(f"   {key}: {value}")
            print(f"   wall time: {seconds:.1f} s", flush=True)
            times[name] = seconds
            rows.append({"script": name, "mode": mode, "seconds": round(seconds, 2), "status": "ok"})
    _record_times(out / "run_all_times.csv", rows, mode)
    print(f"== total wall time ({mode}): {total.seconds:.1f} s on {os.cpu_count()} cores")
    return times


def _record_times(path, rows, mode):
    """Merge this run's rows into ``path``: one row per (script, mode), and a ``total`` row per mode."""
    previous = read_csv(path) if path.exists() else []
    fresh = {(r["script"], r["mode"]) for r in rows}
    kept = [r for r in previous if r.get("script") != "total" and (r.get("script"), r.get("mode")) not in fresh]
    merged = kept + rows
    merged.sort(key=lambda r: (r["mode"], SCRIPTS.index(r["script"]) if r["script"] in SCRIPTS else len(SCRIPTS)))
    for each_mode in dict.fromkeys(r["mode"] for r in merged):
        seconds = [float(r["seconds"]) for r in merged if r["mode"] == each_mode and r["seconds"] not in ("", None)]
        merged.append({"script": "total", "mode": each_mode, "seconds": round(sum(seconds), 2), "status": "ok",
                       "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "machine": platform.machine()})
    write_csv(path, merged)


def _cli(argv=None):
    parser = argparse.ArgumentParser(description="Regenerate paper_figures/ (figures and CSVs).")
    parser.add_argument("--quick", action="store_true", help="small grids (under 10 minutes on 2 cores)")
    parser.add_argument("--out-dir", default=None, help="output folder (default paper_figures/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SCRIPTS)}")
    args = parser.parse_args(argv)
    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    main(args.quick, out_dir=args.out_dir, progress=not args.no_progress, only=only)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
