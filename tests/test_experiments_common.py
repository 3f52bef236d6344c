"""The shared plumbing of the experiment scripts: where they write, how run
times are totalled, and the fixed figure style.  Fast: nothing is run."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("matplotlib")

from experiments import common  # noqa: E402
from experiments.common import read_csv, record_times  # noqa: E402

SCRIPTS = ("first", "second", "third")


def _parse(*argv):
    return common.add_output_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_quick_runs_write_to_the_scratch_folder_unless_told_otherwise(tmp_path):
    assert common.chosen_output_dir(_parse()) == common.FIGURE_DIR
    assert common.chosen_output_dir(_parse("--quick")) == common.SCRATCH_DIR
    assert common.chosen_output_dir(_parse("--quick", "--overwrite")) == common.FIGURE_DIR
    assert common.chosen_output_dir(_parse("--quick", "--out-dir", str(tmp_path))) == tmp_path
    assert common.SCRATCH_DIR != common.FIGURE_DIR and common.SCRATCH_DIR.parent == common.FIGURE_DIR
    assert common.default_output_dir(tiny=True) == common.SCRATCH_DIR


def test_the_scratch_folder_is_ignored_by_git():
    ignore = (common.FIGURE_DIR.parent / ".gitignore").read_text()
    assert "paper_figures/quick/" in ignore.split()


def test_run_times_are_totalled_only_over_what_ran(tmp_path):
    path = tmp_path / "run_all_times.csv"
    record_times(path, [{"script": "first", "mode": "full", "seconds": 1.5, "status": "ok"},
                        {"script": "third", "mode": "full", "seconds": 2.0, "status": "ok"}], SCRIPTS)
    summary = read_csv(path)[-1]
    assert summary["script"] == "partial total" and float(summary["seconds"]) == 3.5
    assert summary["scripts_summed"] == "2" and summary["scripts_left_out"] == "second"
    # A later run of the missing script completes the total; re-running one replaces its time.
    record_times(path, [{"script": "second", "mode": "full", "seconds": 4.0, "status": "ok"},
                        {"script": "first", "mode": "full", "seconds": 0.5, "status": "ok"}], SCRIPTS)
    rows = read_csv(path)
    assert [r["script"] for r in rows] == ["first", "second", "third", "total"]
    assert float(rows[-1]["seconds"]) == 6.5 and rows[-1]["scripts_left_out"] == ""
    # Modes are totalled separately.
    record_times(path, [{"script": "first", "mode": "quick", "seconds": 0.25, "status": "ok"}], SCRIPTS)
    totals = {(r["script"], r["mode"]): float(r["seconds"]) for r in read_csv(path) if "total" in r["script"]}
    assert totals == {("total", "full"): 6.5, ("partial total", "quick"): 0.25}
    # A script outside the list (timed by its own command line) is kept but not summed.
    record_times(path, [{"script": "outside", "mode": "full", "seconds": 100.0, "status": "ok"}], SCRIPTS)
    rows = read_csv(path)
    full = [r for r in rows if r["mode"] == "full"]
    assert [r["script"] for r in full] == ["first", "second", "third", "outside", "total"]
    assert float(full[-1]["seconds"]) == 6.5 and full[-1]["not_summed"] == "outside"


def test_every_series_keeps_its_style_whatever_the_plotting_order():
    labels = ["hybrid", "hybrid, adaptive width", "PFR", "ORC", "MRC", "zipf", "zipf_fitted", "empirical",
              "empirical_given_K"]
    styles = {label: tuple(sorted(common.series_style(label).items())) for label in labels}
    assert len(set(styles.values())) == len(labels), "two series share colour and marker"
    assert common.series_style("ORC (default budget)") == common.series_style("ORC")
    assert common.series_style("a label nobody registered") == common.series_style("a label nobody registered")


def test_each_beta_has_one_style_whatever_the_other_betas():
    assert common.beta_style(0.1) == common.beta_style(0.1)
    betas = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    assert len({common.beta_style(b)["color"] for b in betas}) == len(betas)
    assert len({common.beta_style(b)["marker"] for b in betas}) == len(betas)
    with pytest.raises(ValueError, match="must be > 0"):
        common.beta_style(0.0)
    # Values on an ordered scale (such as I in bits) get colours in their order.
    assert common.value_style(2.0, 1.0, 32.0) == common.value_style(2.0, 1.0, 32.0)
    assert common.value_style(2.0, 1.0, 32.0)["color"] != common.value_style(8.0, 1.0, 32.0)["color"]


def test_beta_colours_stay_clear_of_the_layout_colours_beside_them():
    # The VAE figure draws its coding layouts and its betas side by side: a beta's colour
    # must not be (nor nearly be) a layout's, whatever betas a run trains.
    from matplotlib.colors import to_rgb

    layouts = ["kl", "blocks", "blocks_prior_factors", "per_dimension"]
    betas = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    distance = min(sum((a - b) ** 2 for a, b in zip(to_rgb(common.beta_style(beta)["color"]),
                                                     to_rgb(common.series_style(layout)["color"]))) ** 0.5
                   for beta in betas for layout in layouts)
    assert distance > 0.2
    # and the betas are ordered along one sequential map
    assert common.beta_style(0.1)["color"] == common.value_style(0.1, *common.BETA_RANGE)["color"]


@pytest.mark.parametrize("value, label", [(2.0, "2"), (0.5, "0.5"), (50.0, "50"), (1e-4, "$10^{-4}$"),
                                          (1e6, "$10^{6}$"), (3e7, "$3\\cdot 10^{7}$")])
def test_log_tick_labels_are_plain_numbers(value, label):
    assert common._plain_number(value) == label


def test_saved_figures_have_readable_log_ticks(tmp_path):
    fig, ax = common.new_figure()
    ax.plot([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    ax.set_yscale("log")
    common.save_figure(fig, tmp_path / "ticks.png")
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels(minor=True) + ax.yaxis.get_ticklabels()]
    assert "2" in labels and "5" in labels
    assert not any("times" in text or "cdot" in text for text in labels), labels
