"""The report's map of a library by sound: one point per file, placed by its embedding.

The embeddings (``tag --embeddings``) are scaled to unit length and projected to 2-D: with UMAP
(cosine metric) when ``umap-learn`` is installed and there are enough files, else PCA (the two
leading right singular vectors of the centred rows, numpy's SVD). Each file is a dot coloured by
its top genre, with its path, genre and score as the dot's SVG ``<title>`` (a browser shows it
on hover; no script, no network). Files whose best score is below the report's threshold are
hollow rings; outliers, the files farthest from their nearest neighbours (mean cosine distance
to their ``K`` nearest, above Tukey's fence Q3 + 1.5 IQR), are circled in black and listed.
"""

from __future__ import annotations

import html
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

K = 5  # neighbours for the outlier score
MAX_POINTS = 5000  # a larger library is drawn from an even sample
WIDTH, HEIGHT, PAD = 900, 560, 14
PALETTE = [  # matplotlib's tab20, dark shades first
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip
OTHER = "#555555"


def unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def project(embeddings: np.ndarray) -> tuple[np.ndarray, str]:
    """(N, D) -> ((N, 2) coordinates, the method's name)."""
    x = unit(embeddings)
    if len(x) >= 30:
        try:
            import umap  # optional: umap-learn
        except ImportError:
            pass
        else:
            reducer = umap.UMAP(n_components=2, metric="cosine", random_state=0)
            return np.asarray(reducer.fit_transform(x), np.float64), "UMAP"
    centred = x - x.mean(0)
    if len(x) < 2:
        return np.zeros((len(x), 2)), "PCA"
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1]))).astype(np.float64), "PCA"


def isolation(embeddings: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's mean cosine distance (N,) to its ``k`` nearest other rows (0 for N < 2)."""
    x = unit(embeddings)
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(n)
    out = np.empty(n)
    for start in range(0, n, 1024):  # (1024, N) similarities at a time
        sims = x[start : start + 1024] @ x.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + len(sims)] = 1.0 - top.mean(1)
    return out


def outliers(score: np.ndarray) -> np.ndarray:
    """Boolean (N,): above Tukey's upper fence of ``score``."""
    if len(score) < 8:
        return np.zeros(len(score), bool)
    q1, q3 = np.percentile(score, [25, 75])
    return score > q3 + 1.5 * (q3 - q1)


def _scale(xy: np.ndarray) -> np.ndarray:
    low, high = xy.min(0), xy.max(0)
    span = np.where(high - low > 0, high - low, 1.0)
    size = np.array([WIDTH - 2 * PAD, HEIGHT - 2 * PAD])
    out = PAD + (xy - low) / span * size
    out[:, 1] = HEIGHT - out[:, 1]  # y up
    return out


def section(files: pd.DataFrame, embeddings: np.ndarray, threshold: float, shown) -> str:
    """The report's map section (HTML with inline SVG) for the rows of ``files`` (path, top1,
    best) whose ``embeddings`` (N, D) have no NaN; ``shown`` escapes a path for HTML."""
    ok = ~np.isnan(embeddings).any(axis=1)
    files, embeddings = files[ok].reset_index(drop=True), embeddings[ok]
    if len(files) < 2:
        return ""
    note = ""
    if len(files) > MAX_POINTS:
        pick = np.sort(np.random.default_rng(0).choice(len(files), MAX_POINTS, replace=False))
        note = f" An even sample of {MAX_POINTS} of the {len(files)} files is drawn."
        files, embeddings = files.iloc[pick].reset_index(drop=True), embeddings[pick]
    xy, method = project(embeddings)
    score = isolation(embeddings)
    odd = outliers(score)
    genres = files["top1"].value_counts().index.tolist()
    colour = {g: PALETTE[i] if i < len(PALETTE) else OTHER for i, g in enumerate(genres)}
    dots = []
    for i, (x, y) in enumerate(_scale(xy)):
        genre, best = str(files["top1"][i]), float(files["best"][i])
        fill = colour[files["top1"][i]]
        low = best < threshold
        title = f"{shown(files['path'][i])}&#10;{html.escape(genre)} ({best:.2f})"
        title += " &#8212; least confident" if low else ""
        title += " &#8212; outlier" if odd[i] else ""
        style = f'fill="#fff" stroke="{fill}" stroke-width="1.6"' if low else f'fill="{fill}"'
        ring = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" class="odd"/>' if odd[i] else ""
        dots.append(
            f'<g>{ring}<circle cx="{x:.1f}" cy="{y:.1f}" r="3.6" {style}>'
            f"<title>{title}</title></circle></g>"
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" class="map" role="img">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fbfbfb" stroke="#ddd"/>'
        f"{''.join(dots)}</svg>"
    )
    legend = "".join(
        f'<span><i style="background:{colour[g]}"></i>{html.escape(str(g))}</span>'
        for g in genres[: len(PALETTE)]
    )
    if len(genres) > len(PALETTE):
        legend += (
            f'<span><i style="background:{OTHER}"></i>{len(genres) - len(PALETTE)} more</span>'
        )
    listed = np.argsort(-np.where(odd, score, -np.inf), kind="stable")[: int(odd.sum())]
    rows = "".join(
        f"<tr><td>{shown(files['path'][i])}</td><td>{html.escape(str(files['top1'][i]))}</td>"
        f'<td class="n">{score[i]:.3f}</td></tr>'
        for i in listed[:200]
    )
    table = (
        '<table class="files"><thead><tr><th>path</th><th>best genre</th>'
        f'<th class="n">distance to its {K} nearest</th></tr></thead><tbody>{rows}</tbody></table>'
    )
    return (
        f"<h2>Map of the library by sound ({method} of the embeddings)</h2>"
        f"<p class=note>Each dot is a file, coloured by its top genre; hover for its path. Hollow: "
        f"best score below {threshold:g}. Circled: outliers, far from every other file.{note}</p>"
        f'<p class="legend">{legend}</p>{svg}'
        f"<h3>Outliers: {int(odd.sum())}</h3>{table if odd.any() else ''}"
    )


CSS = (
    ".legend span{margin-right:1em;white-space:nowrap}.legend i{display:inline-block;width:.8em;"
    "height:.8em;border-radius:50%;margin-right:.3em}svg.map circle.odd{fill:none;stroke:#000;"
    "stroke-width:1.2}"
)
