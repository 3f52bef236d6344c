"""End-to-end check of the experiments: every script runs on a tiny grid and writes sane CSVs and PNGs."""

from __future__ import annotations

import math

import pytest

# The experiments need the "experiments" and "torch" extras; without them this module is skipped.
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from experiments import run_all  # noqa: E402
from experiments.common import read_csv  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Files each experiment writes (relative to the output folder).
OUTPUTS = {
    "bits_vs_kl": ["bits_vs_kl.csv", "bits_vs_kl.png", "bits_blocks.csv", "bits_blocks.png"],
    "runtime_vs_kl": ["runtime_vs_kl.csv", "runtime_vs_kl.png"],
    "exactness": ["exactness_ks.csv", "exactness_tv.csv", "exactness.png"],
    "truncation": ["truncation.csv", "truncation.png"],
    "nongaussian": ["nongaussian_hist.csv", "nongaussian_bits.csv", "nongaussian.png"],
    "model_params": ["model_params.csv", "model_params.png"],
    "vae_digits": ["vae_digits.csv", "vae_digits_summary.csv", "vae_digits_curves.csv", "vae_digits.png"],
    "samplers": ["samplers.csv", "samplers.png"],
    "learned_compression": ["learned_compression.csv", "learned_compression_gaps.csv", "learned_compression.png"],
    "channel_drift": ["channel_drift.csv", "channel_drift.png"],
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_figures")
    times = run_all.main(tiny=True, out_dir=out, progress=False)
    return out, times


def test_run_all_tiny_writes_every_figure_and_csv(tiny_run):
    out, times = tiny_run
    assert set(run_all.SCRIPTS) == set(OUTPUTS)
    for name, files in OUTPUTS.items():
        if name not in times:  # a module that does not exist yet is reported as missing
            status = {r["script"]: r["status"] for r in read_csv(out / "run_all_times.csv")}
            assert status[name] == "missing", name
            continue
        for file in files:
            path = out / file
            assert path.exists() and path.stat().st_size > 0, path
            if file.endswith(".png"):
                assert path.read_bytes()[:8] == PNG_MAGIC, path
            else:
                assert len(read_csv(path)) >= 1, path
    timing = read_csv(out / "run_all_times.csv")
    assert timing[-1]["script"] == "total" and timing[-1]["mode"] == "tiny" and float(timing[-1]["seconds"]) > 0


def test_tiny_numbers_are_consistent(tiny_run):
    out, times = tiny_run
    runtime = read_csv(out / "runtime_vs_kl.csv")
    assert {r["method"] for r in runtime} >= {"hybrid, defaults (width from std)",
                                              "hybrid, width from std, transform = prior",
                                              "hybrid, adaptive width", "PFR"}
    for row in runtime:
        assert float(row["median_candidates"]) >= 1 and float(row["encode_us_per_sample"]) > 0
    # Exact methods pass their statistical checks; the decoded samples round-tripped bit for bit.
    for row in read_csv(out / "exactness_ks.csv"):
        if row["method"] in ("hybrid", "PFR"):
            assert row["passed"] == "True", row
    for row in read_csv(out / "truncation.csv"):
        assert float(row["tv_exact"]) == pytest.approx(float(row["tail_mass"]))
        assert int(row["samples_outside_support"]) == 0
        assert float(row["ks_to_truncated_pvalue"]) > 1e-3
        assert float(row["measured_bits"]) > float(row["mean_kl_bits"])
    for row in read_csv(out / "nongaussian_bits.csv"):
        kl, bits = float(row["mean_kl_bits"]), float(row["measured_bits"])
        assert kl < bits < kl + math.log2(kl + 1) + 4  # Li & El Gamal's bound
    for row in read_csv(out / "model_params.csv"):
        if row["beta"] != "MAP":
            assert float(row["total_bits"]) > float(row["kl_bits"]) > 0
            assert 0.1 < float(row["coded_accuracy"]) <= 1.0


def test_learned_compression_tiny_measures_three_pipelines(tiny_run):
    out, times = tiny_run
    rows = read_csv(out / "learned_compression.csv")
    assert {(r["model"], r["pipeline"]) for r in rows} == {(m, p) for m in ("mlp", "conv")
                                                           for p in ("rcc", "uq", "hard")}
    assert {r["latents"] for r in rows if r["model"] == "conv"} == {"8"}
    for row in rows:
        bits, mse = float(row["bits_per_image"]), float(row["mse"])
        assert bits > 0 and 0 < mse < 1
        assert float(row["psnr_db"]) == pytest.approx(10 * math.log10(1 / mse))
        # Real bytes: never fewer bits than the messages' information content (up to the byte rounding).
        assert bits >= float(row["message_bits"]) - 8 / 40
        if row["pipeline"] == "rcc":
            assert bits > float(row["kl_bits"]) - 1.0
            assert float(row["per_item_stream_bits"]) >= bits
            assert 0 <= int(row["fallback_items"]) <= int(row["fallback_blocks"])
            assert int(row["fallback_blocks"]) <= int(row["fallback_items"]) * int(row["num_blocks"])
    assert not (out / "learned_compression_drift.csv").exists()


def test_vae_digits_tiny_averages_seeds(tiny_run):
    out, times = tiny_run
    summaries = read_csv(out / "vae_digits_summary.csv")
    curves = read_csv(out / "vae_digits_curves.csv")
    assert {s["seed"] for s in summaries} == {"0", "1"}
    blocks = [s for s in summaries if s["layout"] == "blocks"]
    for curve in curves:
        sel = [float(s["measured_bits_per_image"]) for s in summaries
               if s["layout"] == curve["layout"] and s["beta"] == curve["beta"]]
        assert int(curve["seeds"]) == len(sel) == 2
        assert float(curve["measured_bits_per_image"]) == pytest.approx(sum(sel) / len(sel))
        assert float(curve["mse_decoded_latents_se"]) > 0  # the seeds train different models
    assert [s["fresh_process_bit_exact"] for s in blocks] == ["True", ""]  # checked for the first seed


def test_vae_digits_replot_redraws_the_committed_figure_from_its_csvs(tmp_path):
    # The committed figure is redrawn from the committed per-image and per-seed CSVs without
    # training; the seed averages it recomputes are the committed ones, to the byte.
    import shutil

    from experiments import vae_digits
    from experiments.common import FIGURE_DIR

    for name in ("vae_digits.csv", "vae_digits_summary.csv"):
        shutil.copy(FIGURE_DIR / name, tmp_path / name)
    figure = vae_digits.replot(tmp_path)
    assert figure.read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "vae_digits_curves.csv").read_bytes() == (FIGURE_DIR / "vae_digits_curves.csv").read_bytes()


def test_fallback_items_count_matches_coding_each_item():
    from experiments import learned_compression as lc
    from rcc.torch import RCCChannel

    g = torch.Generator().manual_seed(3)
    mean = torch.randn(64, 4, generator=g, dtype=torch.float64) * 0.9
    log_scale = torch.full((64, 4), -2.0, dtype=torch.float64)
    channel = RCCChannel(4, block_budget_bits=6.0)
    channel.calibrate(mean, log_scale)
    channel.eval()
    log_scale = log_scale.clone()
    log_scale[::5, 1] += 1.0  # some items much wider than at calibration: their blocks fall back
    _, _, stats = channel.compress(mean, log_scale, lc.CODING_SEED, return_stats=True)
    direct = sum(channel.compress(mean[i:i + 1], log_scale[i:i + 1], lc.CODING_SEED, return_stats=True)[2]
                 ["fallback_blocks"] > 0 for i in range(64))
    assert stats["fallback_blocks"] > 0
    assert lc.fallback_items(stats) == direct


def test_verdict_names_the_winner_only_beyond_two_standard_errors():
    from experiments import learned_compression as lc

    def row(rate, rcc, uq, hard, se):
        g = {"model": "mlp", "bits_per_image": rate, "psnr_rcc": rcc, "psnr_uq": uq, "psnr_hard": hard}
        for a, b in (("rcc", "uq"), ("rcc", "hard"), ("uq", "hard")):
            g[f"gap_{a}_minus_{b}_db"] = g[f"psnr_{a}"] - g[f"psnr_{b}"]
            g[f"gap_{a}_minus_{b}_se"] = se
        g["best"] = lc.best_at(g)
        return g

    gaps = [row(20, 18.0, 18.5, 17.0, 0.1), row(30, 19.0, 19.05, 18.0, 0.1), row(40, 21.0, 20.0, 20.0, 0.1)]
    assert [g["best"] for g in gaps] == ["uq", "tie: uq, rcc", "rcc"]
    text = lc.verdict(gaps, "mlp")
    assert text.startswith("20.0 bits: soft rounding + UQ best; 30.0 bits: soft rounding + UQ and RCC tied")
    assert text.endswith("40.0 bits: RCC best")
    assert lc.verdict(gaps, "conv") == "no rate range that every pipeline reaches"


def test_learned_compression_training_is_deterministic():
    from experiments import learned_compression as lc
    from experiments.vae_digits import load_digits_split

    train_images, _ = load_digits_split()
    for architecture, latents in (("mlp", 3), ("conv", 8)):
        for pipeline in lc.PIPELINES:
            weights = []
            for _ in range(2):
                model = lc.Codec.create(pipeline, latents, 8, seed=5, architecture=architecture)
                lc.train(model, train_images[:256], 1.0, 12, seed=6, progress=False)
                weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
            assert torch.equal(weights[0], weights[1]), (architecture, pipeline)


def test_codec_rejects_bad_architecture_and_latent_counts():
    from experiments import learned_compression as lc

    with pytest.raises(ValueError, match="architecture must be one of"):
        lc.Codec.create("rcc", 8, 8, seed=0, architecture="transformer")
    with pytest.raises(ValueError, match="multiple of 4"):
        lc.Codec.create("uq", 6, 8, seed=0, architecture="conv")
    model = lc.Codec.create("rcc", 8, 4, seed=0, architecture="conv")
    x_hat, rate = model.training_terms(torch.rand(5, 64, generator=torch.Generator().manual_seed(0)))
    assert x_hat.shape == (5, 64) and rate.shape == (5,)


def test_hard_rounding_coder_round_trips_with_escapes():
    import numpy as np

    from experiments import learned_compression as lc

    model = lc.Codec.create("hard", 3, 8, seed=0)
    k = np.array([[0, 1, -2], [50, -3, 0], [0, -400, 7]], dtype=np.int64)  # 50 and -400 lie outside the window
    data, escapes = lc.hard_compress(model.channel, k)
    assert escapes == 2
    assert np.array_equal(lc.hard_decompress(model.channel, data, k.shape), k)


def test_run_all_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown experiments"):
        run_all.main(tiny=True, out_dir=tmp_path, only=["no_such_figure"])


def _handle_colour(handle):
    from matplotlib.colors import to_hex

    line = handle.lines[0] if hasattr(handle, "lines") else handle  # an errorbar's data line
    colour = line.get_color() if hasattr(line, "get_color") else line.get_facecolor()
    return to_hex(colour)


def test_learned_compression_figure_gives_each_series_its_own_colour(tmp_path, monkeypatch):
    # Redraw the committed figure from its CSV and read back what every labelled series was drawn with:
    # one colour per series in every panel and row, and no colour shared by two series.
    import shutil

    from experiments import learned_compression as lc
    from experiments.common import FIGURE_DIR

    drawn = {}

    def capture(fig, path):
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                drawn.setdefault(label, set()).add(_handle_colour(handle))
        return path

    shutil.copy(FIGURE_DIR / "learned_compression.csv", tmp_path / "learned_compression.csv")
    monkeypatch.setattr(lc, "save_figure", capture)
    lc.replot(tmp_path)
    assert set(drawn) == {s["label"] for s in lc.SERIES.values()}
    assert all(len(colours) == 1 for colours in drawn.values()), drawn
    colours = [next(iter(c)) for c in drawn.values()]
    assert len(set(colours)) == len(colours), drawn


def _label_fits(fig, ax):
    fig.tight_layout()  # as save_figure lays the figure out
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return ax.yaxis.label.get_window_extent(renderer).height <= ax.get_window_extent(renderer).height


def test_channel_drift_axis_labels_fit_beside_their_axes():
    from experiments import channel_drift
    from experiments.common import FIGURE_DIR, plt

    fig, axes = channel_drift.draw(read_csv(FIGURE_DIR / "channel_drift.csv"))
    try:
        assert all(_label_fits(fig, ax) for ax in axes)
        axes[0].set_ylabel("measured bits above the KL, per item")  # the one-line label ran past the axes
        assert not _label_fits(fig, axes[0])
    finally:
        plt.close(fig)
