"""Formatting shared by every table: display names, numbers, marks, as LaTeX and markdown.

Why one module: a table cell is written twice (a paper's LaTeX, a README's markdown) and both
must say the same thing: the same display names ("RieM", "LeNet-5"), real minus signs (``$-$``
in LaTeX, U+2212 in markdown), mean ± std only where the seeds differ. A cell is therefore
built once as a :class:`Text` holding both forms; :mod:`riembench.report.render` picks one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

MINUS = "\u2212"


def missing(x: Any) -> bool:
    """A cell with no number (None, pandas' NA, NaN): rendered as "--", never as 0."""
    if x is None or x is pd.NA:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def too_few_seeds(deterministic: bool, n_selected: int, n_failed: int, k: int) -> bool:
    """Whether a cell's number deserves a "*": failed seeds, or fewer than ``k`` usable seeds
    of a method whose seeds differ. A deterministic cell (its records say so: the runner ran
    one seed of original, quant, dfq, prune, svd, ...) needs one seed, and one is not "too
    few"."""
    return n_failed > 0 or (deterministic is not True and n_selected < k)


def tex_escape(text: str) -> str:
    """Method and family names carry underscores; LaTeX needs them (and friends) escaped."""
    out = text.replace("\\", "\x00")
    for a, b in (("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("$", r"\$"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                 ("^", r"\textasciicircum{}")):
        out = out.replace(a, b)
    out = out.replace("\x00", r"\textbackslash{}")
    for a, b in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("×", r"$\times$"), (MINUS, "$-$"),
                 ("†", r"$^{\dagger}$"), ("‡", r"$^{\ddagger}$"), ("√", r"$\surd$"), ("²", r"$^2$")):
        out = out.replace(a, b)
    return out


# ------------------------------------------------------------------------------------ cells

@dataclass(frozen=True)
class Text:
    """One cell (or header, or caption) in both output languages."""

    md: str
    tex: str

    @classmethod
    def plain(cls, text: str) -> Text:
        """Text without markup: the same words, escaped for LaTeX."""
        return cls(text, tex_escape(text))

    def __add__(self, other: Text | str) -> Text:
        other = as_text(other)
        return Text(self.md + other.md, self.tex + other.tex)

    def __radd__(self, other: str) -> Text:
        return as_text(other) + self

    def __str__(self) -> str:
        return self.md


def as_text(value: Any) -> Text:
    """A cell value as :class:`Text` (a plain string is escaped for LaTeX, never interpreted)."""
    if isinstance(value, Text):
        return value
    if missing(value):
        return DASH
    return Text.plain(str(value))


DASH = Text("--", "--")
EMPTY = Text("", "")


def join(parts: list[Text | str], sep: str = " / ") -> Text:
    out = EMPTY
    for i, part in enumerate(parts):
        out = out + (sep if i else "") + as_text(part)
    return out


def bold(text: Text) -> Text:
    return Text(f"**{text.md}**", rf"\textbf{{{text.tex}}}")


def italic(text: Text) -> Text:
    return Text(f"*{text.md}*", rf"\textit{{{text.tex}}}")


def code(name: str) -> Text:
    """An identifier shown as such (a matrix family, a config value without a display name)."""
    return Text(f"`{name}`", rf"\texttt{{{tex_escape(name)}}}")


def marks(failed: bool = False, few: bool = False, other: str = "") -> Text:
    """Footnote marks after a number: † failed seeds, * fewer seeds than the rule asks."""
    md = ("†" if failed else "") + ("*" if few else "") + other
    if not md:
        return EMPTY
    tex = (r"\dagger" if failed else "") + ("*" if few else "") + other.replace("‡", r"\ddagger")
    return Text(md, f"$^{{{tex}}}$")


def _signs(text: str) -> Text:
    """A formatted number with real minus signs (U+2212; ``$-$`` in LaTeX)."""
    return Text(text.replace("-", MINUS), text.replace("-", "$-$"))


def number(x: Any, digits: int = 2, signed: bool = False) -> Text:
    """``1.23``, ``+0.07``, ``−1.23``; ``--`` for a missing value."""
    if missing(x):
        return DASH
    value = float(x)
    if signed and round(value, digits) == 0:
        value = 0.0  # "+0.00", not "-0.00"
    return _signs(f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}")


def sci(x: Any, digits: int = 2) -> Text:
    """Scientific notation as the paper prints it (``2.20E−04``); ``--`` for a missing value."""
    if missing(x):
        return DASH
    return _signs(f"{float(x):.{digits}E}")


def count(x: Any) -> Text:
    """59134 -> ``59.1K``, as the paper prints parameter counts."""
    if missing(x):
        return DASH
    x = float(x)
    return Text.plain(f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}K")


def percent(x: Any) -> Text:
    return DASH if missing(x) else Text(f"{float(x):.0%}", tex_escape(f"{float(x):.0%}"))


#: a std this small against the mean is float noise of a deterministic computation
NOISE_STD = 1e-9


def shows_std(std: Any, mean: Any, n_selected: Any, deterministic: Any = None) -> bool:
    """Whether a cell's std is a spread worth printing.

    Not for a deterministic row (the record flag ``deterministic`` when the frame carries it),
    one selected seed, or a std that is float noise against the mean (``2.6E-22`` beside
    ``1.6E-06``: the seeds computed the same thing).
    """
    if deterministic is not None and not missing(deterministic) and bool(deterministic):
        return False
    if missing(std) or missing(mean) or missing(n_selected) or int(n_selected) < 2:
        return False
    return float(std) > NOISE_STD * max(abs(float(mean)), 1e-300)


def mean_std(mean: Any, std: Any, show_std: bool, digits: int = 2,
             scientific: bool = False, std_digits: int | None = None) -> Text:
    """``93.15 ± 1.40`` (or ``93.15`` where :func:`shows_std` says no)."""
    fmt = (lambda v, d: sci(v, d)) if scientific else (lambda v, d: number(v, d))
    text = fmt(mean, digits)
    if show_std and not missing(mean):
        text = text + Text(" ± ", r" $\pm$ ") + fmt(std, digits if std_digits is None else std_digits)
    return text


# ------------------------------------------------------------------------------ display names

#: identifiers -> how a paper writes them (markdown, LaTeX)
METHOD_NAMES: dict[str, Text] = {
    "original": Text.plain("Original"),
    "riem": Text.plain("RieM"),
    "lpnorm": Text.plain("Lp-norm"),
    "lpnorm-p1": Text("Lp-norm (p=1)", "Lp-norm ($p$=1)"),
    "lpnorm-p2": Text("Lp-norm (p=2)", "Lp-norm ($p$=2)"),
    "lpnorm-p3": Text("Lp-norm (p=3)", "Lp-norm ($p$=3)"),
    "svd": Text.plain("SVD"),
    "isomap": Text.plain("Isomap"),
    "autoencoder": Text.plain("Autoencoder"),
    "deep_autoencoder": Text.plain("Deep autoencoder"),
    "lle": Text.plain("LLE"),
    "nystroem": Text("Nyström", r"Nystr\"om"),
    "kernel_pca": Text.plain("Kernel PCA"),
    "dfq": Text.plain("DFQ"),
    "quant": Text.plain("Uniform quant."),
    "prune": Text.plain("Magnitude pruning"),
    "neuron_merge": Text.plain("Neuron Merging"),
    "omse": Text.plain("OMSE"),
    "gdfq": Text.plain("GDFQ"),
    "squant": Text.plain("SQuant"),
    "ddaq": Text.plain("DDAQ"),
    "dsg": Text.plain("DSG"),
    "udfc": Text.plain("UDFC"),
    "t-detr": Text.plain("T-DETR"),
    "detr": Text.plain("DETR"),
}
BACKBONE_NAMES: dict[str, str] = {
    "lenet5": "LeNet-5", "resnet9": "ResNet-9", "resnet18": "ResNet-18", "resnet34": "ResNet-34",
    "resnet50": "ResNet-50", "resnet101": "ResNet-101", "densenet121": "DenseNet-121",
    "detr_r50": "DETR-R50",
}
DATASET_NAMES: dict[str, str] = {
    "digits": "digits", "mnist": "MNIST", "cifar100": "CIFAR-100", "imagenet": "ImageNet-1k",
    "coco": "COCO val2017", "synthetic": "synthetic",
}
FAMILY_NAMES: dict[str, Text] = {
    "lp_field": Text("Lp field", "$L_p$ field"),
    "kernel_field": Text.plain("Gaussian-kernel field"),
    "lowrank": Text.plain("low rank + noise"),
    "randn": Text("iid N(0, 1)", r"iid $\mathcal{N}(0, 1)$"),
    "file": Text.plain("matrix from a file"),
}


def method_name(method: str, variant: str = "", protocol: str = "") -> Text:
    """``RieM (fast)``: the display name plus the variant, so a shortened fit reads as one, and
    ``RieM (dev-guided)`` when labelled dev data picked the checkpoints (protocol dev_guided)."""
    name = METHOD_NAMES.get(method) or code(method)
    tags = [t for t in (variant if isinstance(variant, str) else "",
                        "dev-guided" if protocol == "dev_guided" else "") if t]
    return name + (f" ({', '.join(tags)})" if tags else "")


def protocol_of(value: object) -> str:
    """A record's protocol; records made before protocols existed were all ``strict``."""
    return value if isinstance(value, str) and value else "strict"


def backbone_name(backbone: str) -> Text:
    return Text.plain(BACKBONE_NAMES[backbone]) if backbone in BACKBONE_NAMES else code(backbone)


def dataset_name(dataset: str) -> Text:
    return Text.plain(DATASET_NAMES[dataset]) if dataset in DATASET_NAMES else code(dataset)


def family_name(family: str) -> Text:
    """A matrix family's words with its identifier, so the reader can find its config."""
    words = FAMILY_NAMES.get(family)
    return words + " (" + code(family) + ")" if words is not None else code(family)
