"""Experiments that regenerate the figures and CSVs in ``paper_figures/``.

Run everything with ``python -m experiments.run_all [--quick]``, or one script
with ``python -m experiments.<name> [--quick]``.
"""

import os

# Set before torch loads its OpenMP runtime (which numba's parallel kernels then share): with
# the default active wait policy an idle OpenMP worker left by rcc's first parallel call keeps
# spinning while torch trains on one thread in the same process, which measured 5-10 times
# slower training steps on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
