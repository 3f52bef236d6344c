"""Regenerate every figure and CSV in ``paper_figures/`` with one command.

    python -m experiments.run_all            # full grids, into paper_figures/
    python -m experiments.run_all --quick    # small grids, into paper_figures/quick/ (not committed)
    python -m experiments.run_all --quick --overwrite     # small grids, into paper_figures/
    python -m experiments.run_all --only exactness,truncation --out-dir /tmp/figures

Each script's ``main`` is called in turn (in this process, so numba kernels
compile once); its wall time is printed and recorded, with the mode, in
``run_all_times.csv`` in the output folder: one row per script and mode,
merged with earlier runs, then one summary row per mode, ``total`` when every
script has a time for that mode and ``partial total`` (naming the scripts it
leaves out) otherwise.  The summary sums the scripts of :data:`SCRIPTS` only;
times of scripts outside it (``dask_scaling``, run on its own because it starts
local clusters) stay in the table, named in the summary's ``not_summed`` column.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys

from .common import Stopwatch, add_output_arguments, chosen_output_dir, output_dir, record_times

__all__ = ["SCRIPTS", "run_one", "main"]

#: Experiment modules in the order they run (``experiments.<name>``, each with ``main``).
SCRIPTS = ("bits_vs_kl", "runtime_vs_kl", "exactness", "truncation", "nongaussian", "model_params", "vae_digits",
           "samplers", "learned_compression", "channel_drift")


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
    record_times(out / "run_all_times.csv", rows, SCRIPTS)
    print(f"== wrote {out}")
    print(f"== wall time of this run ({mode}, {len(times)} of {len(SCRIPTS)} scripts): {total.seconds:.1f} s "
          f"on {os.cpu_count()} cores")
    return times


def _cli(argv=None):
    parser = add_output_arguments(argparse.ArgumentParser(description="Regenerate the figures and CSVs."))
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SCRIPTS)}")
    args = parser.parse_args(argv)
    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    main(args.quick, out_dir=chosen_output_dir(args), progress=not args.no_progress, only=only)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
