"""Distributed coding with rcc.dask: samples per second against worker processes, and 10^7 weights in bytes.

Targets: the Gaussian channel with ``I = 3`` bits per element (``N(mu, s^2)``,
``s = 2**-I``, ``mu ~ N(0, 1 - s^2)`` clipped to ``[-4, 4]``, prior
``N(0, 1)``), hybrid coding with the width of :func:`rcc.gaussian_width`.  The parameters are generated on the
workers by :mod:`dask.array` (chunks of ``chunk`` elements) and persisted
before the clock starts; the reference is the single-process kernel,
:func:`rcc.encode_sample` on the same numbers in this process (one numba
thread, and all threads), timed in the same run.

Scaling rows: a :class:`distributed.LocalCluster` of ``w`` worker processes
with one thread each; the time is the best of ``repeats`` runs of encoding
every chunk (``dask.compute`` of two reductions of the outputs, so no large
result travels back).  ``speedup`` is against the cluster of one worker,
``vs_kernel`` the throughput relative to the one-thread kernel (1 = no
overhead).  Wall times on a shared machine measure the other load as much as
rcc, so the CPU seconds of that best run are recorded too (user + system, of
this process for the kernel, of each worker process for the cluster):
``cpu_vs_kernel`` is the CPU work relative to the one-thread kernel and
``cpu_speedup`` the speedup over one worker that the busiest worker's CPU time
allows on an idle machine.

Bytes row ("weights"): the same targets stand in for the weights of a model
with a variational posterior; on the largest cluster they are encoded and
entropy coded (one stream per chunk, :meth:`rcc.dask.ChunkedMessages.to_bytes`),
decoded back chunk by chunk and checked bit for bit against the encoded
samples.  It reports the real bytes (index included) against the KL, the
times, and each worker's peak resident memory next to the bytes of one chunk's
parameters and outputs.

The machine's load average is written with the results: on a shared machine
the timings measure the contention as much as rcc.

Writes ``dask_scaling.csv`` and ``dask_scaling.png``.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time

import numpy as np

import rcc

from .common import new_figure, output_dir, run_script, save_figure, write_csv

__all__ = ["grid", "main"]

_SEED = 31
_INFO_BITS = 3.0
_CLIP = 4.0
_BYTES_PER_ELEMENT = 8 * (1 + 7)  # a chunk's means and its seven output arrays
_STRIDE = 997  # every _STRIDE-th sample is compared with the in-process call


def grid(quick=False, tiny=False):
    """Targets, chunk size, worker counts and repeats of each mode."""
    cores = os.cpu_count() or 1
    workers = list(range(1, max(2, min(cores, 8)) + 1))
    if tiny:
        return dict(count=200_000, chunk=50_000, workers=workers, repeats=1)
    if quick:
        return dict(count=2_000_000, chunk=250_000, workers=workers, repeats=2)
    return dict(count=10_000_000, chunk=1_000_000, workers=workers, repeats=3)


def _best(function, repeats):
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _cpu_seconds():
    """User + system CPU time of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best_with_cpu(function, repeats, cpu):
    """Best wall time of ``repeats`` runs, and the CPU seconds ``cpu()`` (a dict per process) of that run."""
    best, best_cpu = math.inf, None
    for _ in range(repeats):
        before = cpu()
        start = time.perf_counter()
        function()
        seconds = time.perf_counter() - start
        after = cpu()
        if seconds < best:
            best, best_cpu = seconds, {key: after[key] - before[key] for key in after}
    return best, best_cpu


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _parameters(count, chunk):
    import dask.array as da

    std = 2.0 ** -_INFO_BITS
    mean = da.random.default_rng(_SEED).normal(0.0, math.sqrt(1.0 - std * std), size=count, chunks=chunk)
    # Clipped: among 10^7 draws a few sit 5 prior stds out, where one race examines
    # ~3e7 candidates and alone would take a worker seconds (and exceed max_candidates).
    return da.clip(mean, -_CLIP, _CLIP), std


def _encode_all(enc):
    import dask

    # Two reductions force every chunk's encode; only scalars come back.
    return dask.compute(enc.index.sum(), enc.kl_bits.sum())


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run the benchmark; returns a summary dict."""
    import distributed

    import rcc.dask

    settings = grid(quick, tiny)
    count, chunk, repeats = settings["count"], settings["chunk"], settings["repeats"]
    mean, std = _parameters(count, chunk)
    mean_local = mean.compute(scheduler="threads")
    target = rcc.Normal(mean_local, std)
    rcc.encode_sample(rcc.Normal(mean_local[:10_000], std), _SEED, num_threads=1)  # compile / load the kernels
    load = os.getloadavg()[0]
    rows = []
    kernel, kernel_cpu = {}, {}
    for threads in sorted({1, os.cpu_count() or 1}):
        seconds, cpu = _best_with_cpu(lambda: rcc.encode_sample(target, _SEED, num_threads=threads), repeats,
                                      lambda: {"self": _cpu_seconds()})
        kernel[threads] = seconds
        kernel_cpu[threads] = cpu["self"]
        rows.append(dict(mode="kernel", workers=1, threads=threads, count=count, chunk=count, seconds=seconds,
                         samples_per_s=count / seconds, cpu_seconds=cpu["self"], busiest_cpu_seconds=cpu["self"],
                         load_average=os.getloadavg()[0]))
    reference = rcc.encode_sample(target, _SEED, num_threads=1).sample[::_STRIDE].copy()
    del target

    cluster_seconds, cluster_busiest = {}, {}
    for workers in settings["workers"]:
        with _cluster(workers) as client:
            persisted = client.persist(mean)
            distributed.wait(persisted)
            enc = rcc.dask.encode_sample(rcc.Normal, persisted, std, seed=_SEED)
            _encode_all(rcc.dask.encode_sample(rcc.Normal, persisted[:chunk * workers], std, seed=_SEED))  # warm up
            seconds, cpu = _best_with_cpu(lambda: _encode_all(enc), repeats, lambda: client.run(_cpu_seconds))
            cluster_seconds[workers] = seconds
            cluster_busiest[workers] = max(cpu.values())
            rows.append(dict(mode="dask", workers=workers, threads=1, count=count, chunk=chunk, seconds=seconds,
                             samples_per_s=count / seconds, cpu_seconds=sum(cpu.values()),
                             busiest_cpu_seconds=max(cpu.values()), load_average=os.getloadavg()[0]))
    for row in rows:
        row["speedup"] = cluster_seconds[1] / row["seconds"]
        row["vs_kernel"] = kernel[1] / row["seconds"]
        # Load-independent views: CPU work relative to the one-thread kernel, and the speedup an idle
        # machine would give (the busiest worker's CPU time bounds the wall time from below).
        row["cpu_vs_kernel"] = row["cpu_seconds"] / kernel_cpu[1]
        if row["mode"] == "dask":
            row["cpu_speedup"] = cluster_busiest[1] / row["busiest_cpu_seconds"]
    most = max(settings["workers"])
    with _cluster(most) as client:
        weights_row = _weights(client, mean, std, count, chunk, reference)
    rows.append(weights_row)
    out = output_dir(out_dir)
    write_csv(out / "dask_scaling.csv", rows)
    _plot(rows, out / "dask_scaling.png")
    return {
        "targets": count,
        "kernel samples/s (1 thread)": f"{count / kernel[1]:.3g}",
        "dask overhead at 1 worker (wall; CPU)":
            f"{cluster_seconds[1] / kernel[1] - 1.0:+.1%}; {rows[len(kernel)]['cpu_vs_kernel'] - 1.0:+.1%}",
        f"speedup 1 -> {most} workers (wall; from CPU time)":
            f"{cluster_seconds[1] / cluster_seconds[most]:.2f}x; {cluster_busiest[1] / cluster_busiest[most]:.2f}x",
        "bits per weight (KL per weight)":
            f"{weights_row['bits_per_element']:.3f} ({weights_row['kl_bits_per_element']:.3f})",
        "worker memory growth (MiB) / one chunk (MiB)":
            f"{weights_row['worker_peak_growth_mib']:.0f} / {weights_row['chunk_mib']:.0f}",
        "load average (1 min) at the start": f"{load:.1f}",
    }


@contextlib.contextmanager
def _cluster(workers):
    """A client of a fresh local cluster of ``workers`` processes with one thread each."""
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        yield client


def _weights(client, mean, std, count, chunk, reference):
    """Encode and entropy code ``count`` weights in one streaming pass, decode them and check every bit."""
    import dask
    import dask.array as da

    import rcc.dask

    width = int(rcc.gaussian_width(std))
    code = rcc.ZipfIndexCode(kl_bits=max(0.0, _INFO_BITS - math.log2(width)))
    # Warm up (the kernels load in each worker), then note each worker's peak memory so far.
    warm = rcc.dask.encode_sample(rcc.Normal, mean[:len(client.scheduler_info()["workers"]) * chunk], std,
                                  seed=_SEED)
    rcc.dask.encode_messages(warm, _SEED, index_code=code).to_bytes()
    before = client.run(_peak_rss_mib)
    enc = rcc.dask.encode_sample(rcc.Normal, mean, std, seed=_SEED)  # parameters made on the workers, lazily
    start = time.perf_counter()
    data = rcc.dask.encode_messages(enc, _SEED, index_code=code).to_bytes()  # encode + bytes, chunk by chunk
    encode_seconds = time.perf_counter() - start
    after = client.run(_peak_rss_mib)
    start = time.perf_counter()
    index, factor = rcc.dask.decode_messages(data, _SEED, index_code=code, width=width)
    sample = rcc.dask.decode_sample(index, factor, _SEED, width=width)
    decoded_strided = sample[::_STRIDE].compute()
    decode_seconds = time.perf_counter() - start
    # Every decoded sample equals the encoder's (encoded again here), and a strided subset equals
    # the in-process call's: chunked coding on the cluster changes no bit.
    same, kl_total = dask.compute(da.all(sample == enc.sample), enc.kl_bits.sum())
    exact = bool(same) and np.array_equal(decoded_strided, reference)
    if not exact:
        raise RuntimeError("rcc.dask's samples differ from the in-process call's or from their decoding")
    growth = max(after[w] - before[w] for w in after)
    return dict(mode="weights", workers=len(after), threads=1, count=count, chunk=chunk, seconds=encode_seconds,
                samples_per_s=count / encode_seconds, decode_seconds=decode_seconds, bytes=len(data),
                bits_per_element=8.0 * len(data) / count, kl_bits_per_element=float(kl_total) / count,
                exact=exact, worker_peak_rss_mib=max(after.values()), worker_peak_growth_mib=growth,
                chunk_mib=chunk * _BYTES_PER_ELEMENT / 2**20,
                load_average=os.getloadavg()[0])


def _plot(rows, path):
    fig, axes = new_figure(ncols=2, width=5.0)
    dask_rows = [r for r in rows if r["mode"] == "dask"]
    workers = [r["workers"] for r in dask_rows]
    panels = (("samples_per_s", "seconds", "samples / s (wall clock)"),
              ("busiest_cpu_seconds", "busiest_cpu_seconds", "samples / CPU-second of the busiest process"))
    for panel, (ax, (_, key, label)) in enumerate(zip(axes, panels)):
        ax.plot(workers, [r["count"] / r[key] for r in dask_rows], "o-",
                label="rcc.dask, LocalCluster (1 thread per worker)")
        for r in rows:
            # A threaded process's CPU time sums its threads: only the one-thread kernel goes in the CPU panel.
            if r["mode"] == "kernel" and (panel == 0 or int(r["threads"]) == 1):
                ax.axhline(r["count"] / r[key], ls="--" if r["threads"] == 1 else ":", color="grey",
                           label=f"rcc.encode_sample in one process, {int(r['threads'])} thread(s)")
        ax.set_xlabel("worker processes")
        ax.set_ylabel(label)
        ax.set_xticks(workers)
    load = max(r["load_average"] for r in rows)
    axes[0].set_title(f"{dask_rows[0]['count']:.0e} targets, wall clock (load average {load:.1f})")
    axes[1].set_title("the same runs by CPU time")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
