"""The shared renderer: every table's LaTeX, markdown, CSV and figure from hand-made cells.

The frames go through each table's own ``join_paper`` (the paper join stays per table), then
through the one renderer; a TeX installation, where there is one, compiles every LaTeX file.
"""

import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from riembench.report import fmt
from riembench.report.registry import TABLES
from riembench.report.select import RESULT_COLUMNS

KEYS = ["backbone", "dataset", "method", "variant", "paper_method", "size"]


def _selected(rows: list[dict]) -> pd.DataFrame:
    """A frame as the seed rule returns it (group columns shortened), with the given values."""
    base = {"variant": "", "size": "", "std": math.nan, "n_seeds": 3, "n_selected": 3,
            "n_failed": 0, "selected_seeds": "0,1,2", "record_keys": "k0,k1,k2", "git_revs": "abc"}
    out = pd.DataFrame([{**base, **r} for r in rows])
    for col in KEYS + RESULT_COLUMNS:
        if col not in out:
            out[col] = ""
    return out


def table1_frame() -> pd.DataFrame:
    common = {"backbone": "lenet5", "dataset": "digits"}
    rows = [
        {**common, "method": "original", "paper_method": "original", "mean": 97.5, "std": 0.0,
         "n_seeds": 1, "n_selected": 1, "params": 59134},
        {**common, "method": "lpnorm", "paper_method": "lpnorm-p1", "size": "params(params=6300)",
         "mean": 78.6, "std": 5.15, "params": 5100},
        {**common, "method": "riem", "paper_method": "riem", "size": "params(params=7200)",
         "mean": 93.1, "std": 1.4, "params": 7000},
        # identical seeds: float noise as std, must not print as "± 0.00" or "2.6E-22"
        {**common, "method": "svd", "paper_method": "svd", "size": "params(params=6300)",
         "mean": 86.1, "std": 2.6e-22, "params": 5900},
    ]
    return TABLES.get("table1").join_paper(_selected(rows))


def imagenet_frame(name: str) -> pd.DataFrame:
    common = {"backbone": "resnet18", "dataset": "imagenet"}
    rows = [
        {**common, "method": "original", "paper_method": "original", "mean": 69.76,
         "n_seeds": 1, "n_selected": 1, "stored_mb": 46.8},
        {**common, "method": "riem", "paper_method": "riem", "size": "mb(mb=5.58)", "mean": 60.2,
         "std": 0.5, "stored_mb": 5.5, "size_mb": 5.58, "w_bits": 8, "a_bits": 16},
        {**common, "method": "dfq", "paper_method": "dfq", "mean": 66.0, "n_seeds": 1,
         "n_selected": 1, "stored_mb": 8.8, "w_bits": 6, "a_bits": 6, "deterministic": True,
         "std": 0.3},  # the record flag wins over any std
    ]
    return TABLES.get(name).join_paper(_selected(rows))


def table4_frame() -> pd.DataFrame:
    common = {"backbone": "detr_r50", "dataset": "coco"}
    rows = [
        {**common, "method": "original", "paper_method": "original", "mean": 42.0, "n_seeds": 1,
         "n_selected": 1, "stored_mb": 166.5, "record_keys": "o", "_keys": ["o"],
         **{f"_test_{m}": [40.0] for m in ("AP50", "AP75", "APs", "APm", "APl")}},
        {**common, "method": "riem", "paper_method": "riem", "size": "mb(mb=20)", "mean": 38.5,
         "std": 0.4, "stored_mb": 19.9, "size_mb": 20.0, "record_keys": "a,b",
         "_keys": ["a", "b"], **{f"_test_{m}": [30.0, 31.0] for m in ("AP50", "AP75", "APs",
                                                                      "APm", "APl")}},
    ]
    return TABLES.get("table4").join_paper(_selected(rows))


def table5_frame() -> pd.DataFrame:
    rows = []
    for family in ("lp_field", "randn"):
        for method, mean, std in (("riem", 2e-4, 1e-5), ("kernel_pca", 1.63e-6, 2.6e-22),
                                  ("svd", 3e-5, 0.0)):
            for ratio in (0.1, 0.3):
                rows.append({"family": family, "method": method, "variant": "", "n": 1000,
                             "ratio": ratio, "mean": mean, "std": std, "n_seeds": 10,
                             "n_selected": 3, "n_failed": 0, "selected_seeds": "0,1,2",
                             "record_keys": "k", "git_revs": "abc", "params": 1, "budget": 1})
    return TABLES.get("table5").join_paper(pd.DataFrame(rows))


FRAMES = {"table1": table1_frame, "table2": lambda: imagenet_frame("table2"),
          "table3": lambda: imagenet_frame("table3"), "table4": table4_frame,
          "table5": table5_frame}


def _render(name: str, tmp_path, df: pd.DataFrame | None = None) -> dict[str, str]:
    df = FRAMES[name]() if df is None else df
    paths = [render(df, tmp_path) for render in TABLES.get(name).renderers]
    return {p.suffix: p.read_text() if p.suffix != ".png" else p.read_bytes() for p in paths}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_every_table_renders_paper_ready(name, tmp_path):
    out = _render(name, tmp_path)
    assert set(out) == {".csv", ".tex", ".md", ".png"}
    tex, md = out[".tex"], out[".md"]
    assert all(rule in tex for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    assert tex.count("\\caption{") == 1
    assert "Table" not in tex.split("\\caption{")[1].split(".")[0]  # LaTeX numbers it
    assert md.count("\n# Table ") == 1 and f"# Table {name[-1]}: " in md
    assert "RieM" in tex and "RieM" in md and "riem &" not in tex
    assert not re.search(r"\de-\d", tex.lower())  # no raw "1e-05"
    assert out[".png"][:8] == b"\x89PNG\r\n\x1a\n"
    # the markdown's cell text has no hyphen-minus before a digit: real minus signs
    body = [ln for ln in md.splitlines() if ln.startswith("| ") and "--:" not in ln]
    assert body and not any(" -0" in ln or " -1" in ln or "E-0" in ln for ln in body)


def test_display_names_minus_signs_and_no_fake_std(tmp_path):
    t1 = _render("table1", tmp_path)
    tex, md = t1[".tex"], t1[".md"]
    assert "LeNet-5" in tex and "Lp-norm ($p$=1)" in tex and "Lp-norm (p=1)" in md
    assert "lenet5" not in tex and "lpnorm-p1" not in tex
    assert "$-$18.90" in tex and "\u221218.90" in md  # 78.6 - 97.5
    svd = next(ln for ln in md.splitlines() if ln.startswith("| SVD |"))
    assert "±" not in svd and "86.10" in svd
    riem = next(ln for ln in md.splitlines() if ln.startswith("| RieM |"))
    assert "93.10 ± 1.40" in riem
    t5 = _render("table5", tmp_path)
    kpca = next(ln for ln in t5[".md"].splitlines() if ln.startswith("| Kernel PCA |"))
    assert "±" not in kpca and "E\u221222" not in kpca
    assert "Kernel PCA &" in t5[".tex"]
    t2 = _render("table2", tmp_path)
    dfq = next(ln for ln in t2[".md"].splitlines() if ln.startswith("| DFQ |"))
    assert "±" not in dfq  # the record says deterministic
    assert "ResNet-18 on ImageNet-1k" in t2[".md"]
    t4 = _render("table4", tmp_path)
    assert "AP$_{50}$" in t4[".tex"] and "DETR-R50 on COCO val2017" in t4[".md"]


def test_csv_is_the_tidy_frame_and_command_shows_in_csv_and_markdown_only(tmp_path):
    df = table1_frame()
    plain = _render("table1", tmp_path, df)
    assert plain[".csv"].splitlines()[0].split(",") == list(df.columns)
    assert "command" not in plain[".md"]
    df = df.assign(command=[f"riembench experiment=table1 method=m{i}" for i in range(len(df))])
    out = _render("table1", tmp_path, df)
    assert out[".csv"].splitlines()[0].split(",")[-1] == "command"
    assert "| command |" in out[".md"] and "`riembench experiment=table1 method=m1`" in out[".md"]
    assert "riembench experiment" not in out[".tex"]


def test_fmt_numbers_and_std_rule():
    assert fmt.number(-1.5) == fmt.Text("\u22121.50", "$-$1.50")
    assert fmt.number(-0.001, signed=True).md == "+0.00"
    assert fmt.sci(2.2e-4).tex == "2.20E$-$04"
    assert not fmt.shows_std(2.6e-22, 1.6e-6, 3)
    assert not fmt.shows_std(0.5, 10.0, 1)
    assert not fmt.shows_std(0.5, 10.0, 3, deterministic=True)
    assert fmt.shows_std(0.5, 10.0, 3, deterministic=False)
    assert fmt.method_name("riem", "fast").md == "RieM (fast)"
    assert fmt.method_name("brand_new").tex == "\\texttt{brand\\_new}"


def test_figure_panels_share_one_x_range(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from riembench.report.render import draw
    from riembench.report.table1 import plot

    df = pd.concat([table1_frame(), table1_frame().assign(backbone="resnet9", params=lambda d:
                                                          d["params"] * 10)], ignore_index=True)
    captured = {}
    real_savefig = plt.Figure.savefig

    def grab(fig, *args, **kwargs):
        captured["xlims"] = [ax.get_xlim() for ax in fig.axes if ax.get_visible()]
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = grab
    try:
        draw(plot(df), tmp_path / "t.png", "t")
    finally:
        plt.Figure.savefig = real_savefig
    assert len(captured["xlims"]) == 2 and captured["xlims"][0] == captured["xlims"][1]


DOC = r"""\documentclass{article}
\usepackage{booktabs}
\usepackage{amsmath}
\begin{document}
\input{%s}
\end{document}
"""


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (TeX not installed)")
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_latex_compiles(name, tmp_path):
    _render(name, tmp_path)
    (tmp_path / "doc.tex").write_text(DOC % f"{name}.tex")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
