"""The figures of ``fpe theory plot`` (fpe_ref.theory.plot): every mark named, the error bars defined on the figure."""

from __future__ import annotations

from fpe_ref.theory import plot


def legend_texts(fig):
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def footnote(fig):
    return " ".join(t.get_text() for t in fig.texts)


def test_coverage_figure_names_the_width_lines_and_its_intervals(tmp_path, closed):
    plot.draw_coverage(plot.coverage_data(0, 1, quick=True), str(tmp_path / "c.png"))
    (fig,) = closed
    texts = legend_texts(fig)
    assert any(t.startswith("r = 8") for t in texts) and any("r_{req}" in t for t in texts), texts
    assert "simulated (a), 99.9% CI" in texts
    assert "99.9% Clopper-Pearson" in footnote(fig) and "networks" in footnote(fig)


def test_ratio_figure_defines_its_error_bars(tmp_path, closed):
    plot.draw_ratio(plot.ratio_data(0, 1, quick=True), str(tmp_path / "r.png"))
    (fig,) = closed
    assert legend_texts(fig)
    assert "99.9% normal (CLT) intervals" in footnote(fig) and "100 expected" in footnote(fig)


def test_paper_settings_figure_explains_the_models_and_the_dotted_line(tmp_path, closed):
    plot.draw_paper(plot.paper_data(), str(tmp_path / "p.png"))
    (fig,) = closed
    assert "P = 0.99" in legend_texts(fig)
    assert "Model (a)" in footnote(fig) and "model (b)" in footnote(fig) and "exactly 0" in footnote(fig)
