"""Figures readable on their own: every stage-figure panel titled, shading explained in a legend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stagewise.plotting import add_stage_legend, plot_over_training, plot_stages  # noqa: E402
from stagewise.stages import detect_stages, synthetic_stage_curve  # noqa: E402

STEPS = np.unique(np.round(np.geomspace(1, 10_000, 80))).astype(float)
# flat, a rise, a fall, flat: stages in both directions
CURVE = synthetic_stage_curve(STEPS, [150, 2000, 8000], [0.0, 100.0, -50.0, 0.0], start=1.0)


@pytest.fixture(scope="module")
def result():
    return detect_stages(STEPS, CURVE, n_samples=0, edge_plateaus=True)


def _legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()], legend.get_title().get_text()


def test_plot_stages_titles_every_panel_and_explains_the_shading(result):
    assert {st.direction for st in result.stages} == {"increase", "decrease"}
    fig = plot_stages(result, STEPS, CURVE, loss=np.exp(-CURVE / 100), extra={"weight norm (L2)": np.sqrt(STEPS)},
                      loss_label="loss (nats/token)", title="synthetic")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and all(titles), titles
    assert titles[2] == "weight norm"  # an extra panel is titled by its label, units left to the axis
    assert fig.axes[0].get_ylabel() == "loss (nats/token)"
    assert fig._suptitle.get_text() == "synthetic"
    assert len(fig.legends) == 1
    texts, title = _legend_texts(fig.legends[0])
    assert texts == ["stage where the LLC rises", "stage where the LLC falls", "stage boundary"]
    assert "detected from the LLC" in title and "numbered on top" in title
    # the legend patches have the shading's hues
    patches = fig.legends[0].get_patches()
    assert matplotlib.colors.to_hex(patches[0].get_facecolor()) in ("#fd8d3c",)
    assert matplotlib.colors.to_hex(patches[1].get_facecolor()) in ("#6baed6",)
    plt.close(fig)


def test_stages_of_another_curve_are_named_after_it(result):
    fig = plot_stages(result, STEPS, CURVE, value_label="Hessian trace")
    texts, title = _legend_texts(fig.legends[0])
    assert texts[0] == "stage where the Hessian trace rises"
    assert "detected from the Hessian trace" in title
    assert fig.axes[0].get_title().startswith("Hessian trace over training")
    plt.close(fig)


def test_panel_titles_are_checked(result):
    with pytest.raises(ValueError, match="panel_titles"):
        plot_stages(result, STEPS, CURVE, panel_titles=["only one"])


def test_several_shaded_panels_share_one_legend(result):
    increasing_only = detect_stages(STEPS[:40], CURVE[:40], n_samples=0)
    fig, axes = plt.subplots(1, 2)
    plot_over_training(axes[0], STEPS[:40], {"a": CURVE[:40]}, increasing_only, title="panel a")
    texts, _ = _legend_texts(fig.legends[0])
    assert "stage where the LLC falls" not in texts
    plot_over_training(axes[1], STEPS, {"b": CURVE}, result, title="panel b", label_stages=True)
    assert len(fig.legends) == 1, "one legend for the figure, updated by each shaded panel"
    texts, title = _legend_texts(fig.legends[0])
    assert texts == ["stage where the LLC rises", "stage where the LLC falls", "stage boundary"]
    assert "numbered on top" in title
    assert [ax.get_title() for ax in axes] == ["panel a", "panel b"]
    # the legend lies below the axes, inside the saved (tight) figure
    fig.canvas.draw()
    legend_box = fig.legends[0].get_window_extent()
    assert legend_box.y1 <= min(ax.get_window_extent().y0 for ax in axes)
    assert add_stage_legend(fig, result) is fig.legends[0] and len(fig.legends) == 1
    plt.close(fig)


def test_pilot_dir_is_outside_the_profiles_figures():
    from stagewise.plotting import figures_dir, pilot_dir

    path = pilot_dir("long-200000")
    assert path.name == "long-200000" and path.parent.name == "pilots"
    assert figures_dir("long") not in path.parents and figures_dir() not in path.parents
    for bad in ("", "a/b", "a b"):
        with pytest.raises(ValueError, match="pilot name"):
            pilot_dir(bad)


def test_stamp_setting_keeps_the_title_and_adds_the_setting_under_it():
    from stagewise.plotting import stamp_setting

    fig = plt.figure()
    fig.suptitle("LM: usable SGLD region")
    stamp_setting(fig, "long profile\nanalogue data: repeats")
    assert fig.get_suptitle() == "LM: usable SGLD region\nlong profile\nanalogue data: repeats"
    bare = plt.figure()
    stamp_setting(bare, "cpu profile")
    assert bare.get_suptitle() == "cpu profile"
    with pytest.raises(ValueError, match="setting"):
        stamp_setting(bare, "")
    plt.close("all")


def test_save_figure_names_a_non_paper_setting_once(tmp_path):
    from stagewise.plotting import save_figure

    fig, ax = plt.subplots()
    fig.suptitle("OOD generalisation (C.4), seed 0")
    save_figure(fig, "figC4", directory=tmp_path, formats=("png",), setting="residual=paper_code")
    assert fig.get_suptitle() == "OOD generalisation (C.4), seed 0\nresidual=paper_code"
    assert (tmp_path / "figC4.png").exists()
    named, ax = plt.subplots()  # a panel title already says it: nothing added
    ax.set_title("residual=paper_code: GP slope")
    save_figure(named, "fig1b", directory=tmp_path, formats=("png",), setting="residual=paper_code")
    assert named.get_suptitle() == ""
    plain, _ = plt.subplots()
    plain.suptitle("the paper's setting")
    save_figure(plain, "fig1a", directory=tmp_path, formats=("png",))
    assert plain.get_suptitle() == "the paper's setting"
    plt.close("all")
