"""Distributed coding with rcc.dask: samples per second against worker processes, and 10^7 weights in bytes.

Targets: the Gaussian channel with ``I = 3`` bits per element (``N(mu, s^2)``,
``s = 2**-I``, ``mu ~ N(0, 1 - s^2)`` clipped to ``[-4, 4]``, prior
``N(0, 1)``), hybrid coding with the width of :func:`rcc.gaussian_width`.  The
parameters are generated on the workers by :mod:`dask.array` (chunks of
``chunk`` elements) and persisted before the clock starts, and the same numbers
are gathered into this process for the in-process rows.

What is timed, in every row, is encoding all ``count`` targets and two
reductions of the outputs (the sum of the indices and of the KLs), so every
chunk is encoded and only two numbers come back; nothing is generated,
allocated for the whole batch or sent to the client inside the clock.  Each
time is the best (and the median) of ``repeats`` runs after a warm-up that
loads the kernels in every process.

- ``kernel, chunk loop`` (the reference): :func:`rcc.encode_sample` in this
  process with one numba thread, on the same chunks as the cluster one after
  the other (each with its ``stream_offset``), plus the same reductions: the
  work of one worker without dask.
- ``kernel, one call``: one :func:`rcc.encode_sample` call on the whole batch
  (one thread, and all threads).  Shown for information: it also allocates
  the whole batch's outputs (about 60 bytes per target) afresh on every call,
  which on some virtual machines costs as much as the coding (first touch of
  memory, transparent huge pages; ``NUMPY_MADVISE_HUGEPAGE=0`` avoids the
  latter), so it is not the like-for-like reference for the cluster.
- ``dask``: ``dask.compute`` from the client on a fresh
  :class:`distributed.LocalCluster` of ``w`` worker processes, one thread and
  one numba thread each.  ``speedup`` is the wall time of one worker over
  that of ``w``; ``overhead`` is the wall time over the chunk loop's, minus 1
  (the cost of the dask path at one worker).

Wall times on a shared machine measure the other load as much as rcc, so the
CPU seconds of the best run are recorded too (user + system, of this process
for the kernel rows, of each worker process for the cluster):
``cpu_speedup`` is the speedup over one worker that the busiest worker's CPU
time allows on an idle machine, ``worker_busy`` the fraction of the wall
time the workers spent running tasks (from the task stream; 1 = no idle
worker) and ``busiest_chunk_share`` the fraction of the chunks the busiest
worker encoded (``1 / w`` = balanced).

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
import statistics
import time

import numpy as np

import rcc

from .common import legend_below, new_figure, output_dir, run_script, save_figure, write_csv

__all__ = ["grid", "main"]

_SEED = 31
_INFO_BITS = 3.0
_CLIP = 4.0
_BYTES_PER_ELEMENT = 8 * (1 + 7)  # a chunk's means and its seven output arrays
_STRIDE = 997  # every _STRIDE-th sample is compared with the in-process call
# Each worker process runs one task at a time on one numba thread (rcc.dask's default); without
# this its numba/OpenMP pool would still start a thread per core, idle but competing.
_WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def grid(quick=False, tiny=False):
    """Targets, chunk size, worker counts and repeats of each mode."""
    cores = os.cpu_count() or 1
    workers = list(range(1, max(2, min(cores, 8)) + 1))
    if tiny:
        return dict(count=200_000, chunk=25_000, workers=workers, repeats=1)
    if quick:
        return dict(count=2_000_000, chunk=100_000, workers=workers, repeats=3)
    # 40 chunks of about 0.1 s each: the last chunk leaves the other workers idle for at most ~2.5%
    # of the run, while a task's scheduling cost (~1 ms) stays below 1%.
    return dict(count=10_000_000, chunk=250_000, workers=workers, repeats=5)


def _cpu_seconds():
    """User + system CPU time of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(function, repeats, cpu):
    """Best, median and total wall time of ``repeats`` runs, and the CPU seconds of the best.

    ``cpu()`` returns the CPU seconds so far of each process, as a dict.
    """
    times, best_cpu = [], None
    for _ in range(repeats):
        before = cpu()
        start = time.perf_counter()
        function()
        seconds = time.perf_counter() - start
        after = cpu()
        if not times or seconds < min(times):
            best_cpu = {key: after[key] - before[key] for key in after}
        times.append(seconds)
    return min(times), statistics.median(times), sum(times), best_cpu


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


def _chunk_loop(mean, std, chunk):
    """The in-process reference: the cluster's work, chunk after chunk, without dask."""
    index_sum, kl_sum = 0, 0.0
    for start in range(0, mean.size, chunk):
        sums = _sums(rcc.encode_sample(rcc.Normal(mean[start:start + chunk], std), _SEED, num_threads=1,
                                       stream_offset=start))
        index_sum += sums[0]
        kl_sum += sums[1]
    return index_sum, kl_sum


def _warm_process():
    """Load the kernels (threaded and serial twins) and start numba's pool in this process."""
    import rcc as rcc_here

    for count in (10, 4096):
        target = rcc_here.Normal(np.linspace(-1.0, 1.0, count), 2.0 ** -_INFO_BITS)
        rcc_here.encode_sample(target, _SEED, num_threads=1)
    return os.getpid()


def _compute_seconds(task_stream):
    """Seconds the workers spent running tasks, summed over the task stream's records."""
    return sum(part["stop"] - part["start"] for task in task_stream for part in task["startstops"]
               if part["action"] == "compute")


def _busiest_share(task_stream):
    """The largest fraction of the encode tasks that one worker ran (1/w = balanced)."""
    counts = {}
    for task in task_stream:
        key = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        if str(key).startswith("rcc-encode"):
            counts[task["worker"]] = counts.get(task["worker"], 0) + 1
    return max(counts.values()) / sum(counts.values()) if counts else math.nan


def _sums(enc):
    return int(enc.index.sum()), float(enc.kl_bits.sum())


def _report(progress, label, row):
    """One line per measured row, as it is measured."""
    if not progress:
        return
    median = f", median {row['median_seconds']:.2f} s" if "median_seconds" in row else ""
    cpu = f", CPU {row['cpu_seconds']:.2f} s" if "cpu_seconds" in row else ""
    print(f"{label}: {row['seconds']:.2f} s{median} ({row['samples_per_s'] / 1e6:.2f}M samples/s){cpu}, "
          f"load {row['load_average']:.1f}", flush=True)


def _kernel_row(variant, threads, count, chunk, timing, load):
    seconds, median, _, cpu = timing
    return dict(mode="kernel", variant=variant, workers=1, threads=threads, count=count, chunk=chunk,
                seconds=seconds, median_seconds=median, samples_per_s=count / seconds, cpu_seconds=cpu["self"],
                busiest_cpu_seconds=cpu["self"], load_average=load)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run the benchmark; returns a summary dict."""
    import distributed

    import rcc.dask

    settings = grid(quick, tiny)
    count, chunk, repeats = settings["count"], settings["chunk"], settings["repeats"]
    mean, std = _parameters(count, chunk)
    mean_local = mean.compute(scheduler="threads")
    _warm_process()
    load = os.getloadavg()[0]
    if progress:
        print(f"timing: encode {count:.0e} targets in chunks of {chunk:,} and sum two outputs (best of {repeats}, "
              f"warm, parameters in memory); load average {load:.1f} on {os.cpu_count()} cores", flush=True)
    self_cpu = lambda: {"self": _cpu_seconds()}  # noqa: E731
    rows = []
    loop = _timed(lambda: _chunk_loop(mean_local, std, chunk), repeats, self_cpu)
    rows.append(_kernel_row("chunk loop", 1, count, chunk, loop, os.getloadavg()[0]))
    _report(progress, "in one process, the same chunks one after another, 1 thread", rows[-1])
    target = rcc.Normal(mean_local, std)
    for threads in sorted({1, os.cpu_count() or 1}):
        call = _timed(lambda: _sums(rcc.encode_sample(target, _SEED, num_threads=threads)), repeats, self_cpu)
        rows.append(_kernel_row("one call", threads, count, count, call, os.getloadavg()[0]))
        _report(progress, f"in one process, one call on the whole batch, {threads} thread(s)", rows[-1])
    reference = rcc.encode_sample(target, _SEED, num_threads=1).sample[::_STRIDE].copy()
    expected = _chunk_loop(mean_local, std, chunk)
    del target, mean_local

    cluster_seconds, cluster_busiest = {}, {}
    for workers in settings["workers"]:
        with _cluster(workers) as client:
            persisted = client.persist(mean)
            distributed.wait(persisted)
            client.run(_warm_process)
            enc = rcc.dask.encode_sample(rcc.Normal, persisted, std, seed=_SEED)
            got = _encode_all(enc)  # also warms the graph code path
            if int(got[0]) != expected[0] or not math.isclose(float(got[1]), expected[1], rel_tol=1e-9):
                raise RuntimeError("the cluster's indices differ from the in-process chunk loop's")
            with distributed.get_task_stream(client) as stream:
                seconds, median, total, cpu = _timed(lambda: _encode_all(enc), repeats,
                                                     lambda: client.run(_cpu_seconds))
            busy = _compute_seconds(stream.data) / (workers * total)
            cluster_seconds[workers] = seconds
            cluster_busiest[workers] = max(cpu.values())
            rows.append(dict(mode="dask", variant="LocalCluster", workers=workers, threads=1, count=count,
                             chunk=chunk, seconds=seconds, median_seconds=median, samples_per_s=count / seconds,
                             cpu_seconds=sum(cpu.values()), busiest_cpu_seconds=max(cpu.values()),
                             worker_busy=busy, busiest_chunk_share=_busiest_share(stream.data),
                             load_average=os.getloadavg()[0]))
            _report(progress, f"dask.compute on a LocalCluster of {workers} worker process(es)", rows[-1])
    reference_seconds = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = cluster_seconds[1] / row["seconds"]
        row["overhead"] = row["seconds"] / reference_seconds - 1.0
        row["cpu_overhead"] = row["cpu_seconds"] / rows[0]["cpu_seconds"] - 1.0
        if row["mode"] == "dask":
            row["cpu_speedup"] = cluster_busiest[1] / row["busiest_cpu_seconds"]
    most = max(settings["workers"])
    with _cluster(most) as client:
        client.run(_warm_process)
        weights_row = _weights(client, mean, std, count, chunk, reference)
    rows.append(weights_row)
    _report(progress, f"bytes: encode + write on {most} workers (one pass)", weights_row)
    out = output_dir(out_dir)
    write_csv(out / "dask_scaling.csv", rows)
    _plot(rows, out / "dask_scaling.png")
    one = next(r for r in rows if r["mode"] == "dask" and r["workers"] == 1)
    largest = next(r for r in rows if r["mode"] == "dask" and r["workers"] == most)
    call = next(r for r in rows if r["variant"] == "one call" and r["threads"] == 1)
    return {
        "timed": (f"encode {count:.0e} targets in chunks of {chunk:,} + two sums, best of {repeats}, "
                  "warm, parameters already in memory"),
        "reference (in-process chunk loop, 1 thread) samples/s": f"{count / reference_seconds:.3g}",
        "one in-process call on the whole batch, 1 thread, samples/s": f"{call['samples_per_s']:.3g}",
        "dask overhead at 1 worker vs the chunk loop (wall; CPU)":
            f"{one['overhead']:+.1%}; {one['cpu_overhead']:+.1%}",
        f"speedup 1 -> {most} workers (wall; from CPU time)":
            f"{cluster_seconds[1] / cluster_seconds[most]:.2f}x; {cluster_busiest[1] / cluster_busiest[most]:.2f}x",
        f"at {most} workers: time busy running tasks; most chunks on one worker":
            f"{largest['worker_busy']:.0%}; {largest['busiest_chunk_share']:.0%}",
        "bits per weight (KL per weight)":
            f"{weights_row['bits_per_element']:.3f} ({weights_row['kl_bits_per_element']:.3f})",
        "worker memory growth (MiB) / one chunk (MiB)":
            f"{weights_row['worker_peak_growth_mib']:.0f} / {weights_row['chunk_mib']:.0f}",
        "load average (1 min) at the start": f"{load:.1f} on {os.cpu_count()} cores"
        + (" (busy: these timings measure the other load; rerun on an idle machine)"
           if load > 0.25 * (os.cpu_count() or 1) else ""),
    }


@contextlib.contextmanager
def _cluster(workers):
    """A client of a fresh local cluster of ``workers`` processes with one thread (and one numba thread) each."""
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50, env=_WORKER_ENV) as cluster, distributed.Client(cluster) as client:
        yield client


def _weights(client, mean, std, count, chunk, reference):
    """Encode and entropy code ``count`` weights in one streaming pass, decode them and check every bit."""
    import dask
    import dask.array as da

    import rcc.dask

    width = int(rcc.gaussian_width(std))
    code = rcc.ZipfIndexCode(kl_bits=max(0.0, _INFO_BITS - math.log2(width)))
    # Warm up (the message coder loads in each worker), then note each worker's peak memory so far.
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
    return dict(mode="weights", variant="LocalCluster", workers=len(after), threads=1, count=count, chunk=chunk,
                seconds=encode_seconds,
                samples_per_s=count / encode_seconds, decode_seconds=decode_seconds, bytes=len(data),
                bits_per_element=8.0 * len(data) / count, kl_bits_per_element=float(kl_total) / count,
                exact=exact, worker_peak_rss_mib=max(after.values()), worker_peak_growth_mib=growth,
                chunk_mib=chunk * _BYTES_PER_ELEMENT / 2**20,
                load_average=os.getloadavg()[0])


def _plot(rows, path):
    fig, axes = new_figure(ncols=2, width=5.6)
    dask_rows = [r for r in rows if r["mode"] == "dask"]
    reference = next(r for r in rows if r["variant"] == "chunk loop")
    workers = [r["workers"] for r in dask_rows]
    panels = (("seconds", "samples / s (wall clock, best run)"),
              ("busiest_cpu_seconds", "samples / CPU-second of the busiest process"))
    for panel, (ax, (key, label)) in enumerate(zip(axes, panels)):
        ax.plot(workers, [r["count"] / r[key] for r in dask_rows], "o-",
                label="rcc.dask, LocalCluster (1 thread per worker)")
        for r in dask_rows:
            note = f"{r['speedup']:.2f}x" if panel == 0 else f"{r['cpu_speedup']:.2f}x"
            ax.annotate(note, (r["workers"], r["count"] / r[key]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
        ax.axhline(reference["count"] / reference[key], ls="--", color="black",
                   label="chunk loop: rcc.encode_sample on the same chunks in one process, 1 thread")
        for r in rows:
            # A threaded process's CPU time sums its threads: only one-thread rows go in the CPU panel.
            if r["variant"] == "one call" and (panel == 0 or int(r["threads"]) == 1):
                ax.axhline(r["count"] / r[key], ls=":" if r["threads"] == 1 else "-.", color="grey",
                           label=f"one rcc.encode_sample call on the whole batch, {int(r['threads'])} thread(s)")
        ax.set_xlabel("worker processes")
        ax.set_ylabel(label)
        ax.set_xticks(workers)
        ax.set_ylim(bottom=0)
    load = max(r["load_average"] for r in rows)
    one = dask_rows[0]
    axes[0].set_title(f"{int(one['count']):.0e} targets, chunks of {int(one['chunk']):,} (load average {load:.1f})\n"
                      f"dask at 1 worker: {one['overhead']:+.0%} time vs the chunk loop")
    axes[1].set_title(f"the same runs by CPU time\ndask at 1 worker: {one['cpu_overhead']:+.0%} CPU vs the chunk loop")
    legend_below(fig, axes, ncol=2)
    save_figure(fig, path)


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
