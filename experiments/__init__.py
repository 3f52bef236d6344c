"""Experiments that regenerate the figures and CSVs in ``paper_figures/``.

Run everything with ``python -m experiments.run_all [--quick]``, or one script
with ``python -m experiments.<name> [--quick]``.
"""
