"""Which genre names a file gets: FMA's genre tree, a user's genre map, and the choice per file.

Three parts, used by ``genretag tag`` (the list it writes into tags and the table) and stored in
the checkpoint (the tree, as plain ``str``/``list`` so that ``torch.load(weights_only=True)``
reads it):

* :func:`genre_tree` — each label's ancestors in FMA's taxonomy, root first
  (``"Techno" -> ["Electronic"]``, a root or a label outside the tree, such as a Freesound
  class, ``-> []``).
* :class:`GenreMap` — the user's vocabulary: rename, merge, drop or whitelist labels, from a
  YAML or a CSV file. The YAML form has up to three sections::

      # genres.yaml: every name on the left is one of the checkpoint's labels
      rename:
        Hip-Hop: Hip Hop
        Old-Time / Historic: Oldies
        Drum & Bass: Electronic   # two labels, one name: the merged score is the larger one
        Spoken: null              # null (or "") drops the label, as under drop:
      drop: [Experimental, Sound Effects]
      # keep: [Rock, Pop, Electronic, Hip-Hop]   # a whitelist: every other label is dropped

  ``keep`` and ``drop`` exclude each other. The CSV form is the rename table alone, one
  ``label,genre`` row per label (an optional ``label,genre`` header; an empty genre drops the
  label)::

      label,genre
      Hip-Hop,Hip Hop
      Drum & Bass,Electronic
      Spoken,

  Labels the map does not name keep their own (FMA's) spelling: "Hip-Hop", "Old-Time / Historic".
  A name that is not a label of the checkpoint is an error naming the file, the name and the
  closest labels, so that a typo never silently keeps a genre.
* :func:`choose` — one file's genres, best first: map the scores (rename/merge/drop), keep those
  with score >= ``min_score``, at most ``max_genres``; then, with ``parents``, each chosen genre
  is preceded by its ancestors (mapped the same way, each name once).

  Ancestors brought in this way do NOT count against ``max_genres``: ``max_genres`` bounds the
  model's picks, and the ancestors are implied by them (FMA's tree is at most 5 levels deep, so
  a file gets at most ``5 * max_genres`` names). beets' lastgenre counts its canonical parents
  and truncates after adding them, which can write a parent without the sub-genre that brought
  it; here "Electronic; Techno" always comes whole. An ancestor that was a pick itself counts
  once, where it ranks. An ancestor's score is the larger of its own (when it is a label that the
  map keeps) and its descendant's: a parent genre is at least as likely as its sub-genre.
"""

from __future__ import annotations

import csv
import difflib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genretag.errors import ConfigError

if TYPE_CHECKING:  # a type only: tagging does not import pandas
    import pandas as pd

log = logging.getLogger(__name__)

SEPARATOR = "; "  # how a list of genres is written as one text cell ("Electronic; Techno")
SECTIONS = ("rename", "drop", "keep")


def genre_tree(genres: pd.DataFrame, labels: Sequence[str]) -> dict[str, list[str]]:
    """``{label: [ancestor titles, root first]}`` from FMA's genres table.

    ``genres`` is :func:`genretag.data.fma.read_genres` (indexed by genre_id, with ``parent`` 0
    for a root and ``title``). Labels that are not titles in the table (Freesound classes) map
    to ``[]``. Plain ``str``/``list`` only, for a checkpoint loaded with ``weights_only=True``.
    """
    title = {int(g): str(t) for g, t in genres["title"].items()}
    parent = {int(g): int(p) for g, p in genres["parent"].items()}
    by_title = {t: g for g, t in title.items()}
    tree: dict[str, list[str]] = {}
    for label in labels:
        chain: list[str] = []
        g = by_title.get(label)
        seen = {g}
        while g is not None and parent.get(g, 0) in title:
            g = parent[g]
            if g in seen:  # a cycle in a damaged file: stop rather than loop
                log.warning("genres.csv: the parents of %r form a cycle", label)
                break
            seen.add(g)
            chain.append(title[g])
        tree[str(label)] = chain[::-1]
    return tree


@dataclass
class GenreMap:
    """The name each label is written as (``None``: dropped); labels not named keep theirs."""

    target: dict[str, str | None] = field(default_factory=dict)
    source: str = "<genre map>"
    only: frozenset[str] | None = None  # keep:, for names that are not labels (ancestors)

    def name(self, label: str) -> str | None:
        """The written name of ``label`` (None if the map drops it)."""
        if label in self.target:
            return self.target[label]
        return None if self.only is not None and label not in self.only else label

    @classmethod
    def load(cls, path: str | os.PathLike, labels: Sequence[str]) -> GenreMap:
        """Read a ``.yaml``/``.yml`` or ``.csv`` genre map, checked against the checkpoint's labels."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"--genre-map {path}: cannot be read ({error.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--genre-map {path}: not UTF-8 text") from None
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            rename, drop, keep = _parse_yaml(path, text)
        elif suffix == ".csv":
            rename, drop, keep = _parse_csv(path, text), [], None
        else:
            raise ConfigError(f"--genre-map {path}: use a .yaml, .yml or .csv file")
        return cls.build(rename, drop, keep, labels, source=f"--genre-map {path}")

    @classmethod
    def from_data(cls, data: Mapping, labels: Sequence[str], source: str) -> GenreMap:
        """A map from its plain data ({rename, drop, keep}, as in the YAML form), e.g. the
        default map a checkpoint carries (hyper-parameter ``genre_map``)."""
        rename, drop, keep = _sections(dict(data), source)
        return cls.build(rename, drop, keep, labels, source=source)

    @classmethod
    def build(
        cls,
        rename: dict[str, str | None],
        drop: Sequence[str],
        keep: Sequence[str] | None,
        labels: Sequence[str],
        source: str = "<genre map>",
    ) -> GenreMap:
        """A map from its three parts, every name checked against ``labels`` (ConfigError)."""
        known = set(labels)
        for name in [*rename, *drop, *(keep or [])]:
            if name not in known:
                close = difflib.get_close_matches(name, list(labels), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ConfigError(
                    f"{source}: {name!r} is not a label of this checkpoint{hint} "
                    f"(the labels are the genre names in the tag table's header)"
                )
        both = sorted(set(drop) & {k for k, v in rename.items() if v})
        if both:
            raise ConfigError(f"{source}: {both[0]!r} is both renamed and dropped; keep one")
        idle = sorted(k for k, v in rename.items() if v and keep is not None and k not in keep)
        if idle:
            raise ConfigError(f"{source}: {idle[0]!r} is renamed but not in keep:; add it there")
        target: dict[str, str | None] = {}
        if keep is not None:
            target.update({label: None for label in labels if label not in set(keep)})
        target.update({label: None for label in drop})
        target.update({k: (v or None) for k, v in rename.items() if target.get(k, k) is not None})
        return cls(target, source, None if keep is None else frozenset(keep))


def _parse_yaml(path: Path, text: str) -> tuple[dict[str, str | None], list[str], list[str] | None]:
    import yaml

    try:
        data = yaml.safe_load(text)  # safe_load: a map is data, it never builds objects
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"--genre-map {path}: not valid YAML{line}") from None
    return _sections({} if data is None else data, f"--genre-map {path}")


def _sections(
    data: object, where: str
) -> tuple[dict[str, str | None], list[str], list[str] | None]:
    """(rename, drop, keep) of a map's plain data (the YAML form), checked (ConfigError)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected the sections {', '.join(SECTIONS)}")
    unknown = [str(k) for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown section {unknown[0]!r}; use rename: {{label: name}}, "
            f"drop: [labels] and/or keep: [labels]"
        )
    rename = data.get("rename") or {}
    if not isinstance(rename, dict):
        raise ConfigError(f"{where}: rename: must map labels to names")
    lists = {}
    for section in ("drop", "keep"):
        value = data.get(section)
        if value is not None and not isinstance(value, list):
            raise ConfigError(f"{where}: {section}: must be a list of labels")
        lists[section] = value
    if lists["drop"] and lists["keep"] is not None:
        raise ConfigError(f"{where}: give keep: (a whitelist) or drop:, not both")
    for k, v in rename.items():
        if not isinstance(v, (str, type(None))):
            raise ConfigError(f"{where}: rename: {k}: must be a name or null")
    return (
        {str(k): (v.strip() if v else None) for k, v in rename.items()},
        [str(x) for x in lists["drop"] or []],
        None if lists["keep"] is None else [str(x) for x in lists["keep"]],
    )


def _parse_csv(path: Path, text: str) -> dict[str, str | None]:
    rename: dict[str, str | None] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and [c.strip().lower() for c in row] == ["label", "genre"]:
            continue
        if len(row) != 2:
            raise ConfigError(
                f"--genre-map {path}: line {number}: expected `label,genre` (quote names "
                f'that hold a comma: "Folk, Rock"), got {len(row)} cells'
            )
        label, genre = row[0].strip(), row[1].strip()
        if label in rename and rename[label] != (genre or None):
            raise ConfigError(f"--genre-map {path}: line {number}: {label!r} is mapped twice")
        rename[label] = genre or None
    return rename


def mapped(
    scores: np.ndarray, labels: Sequence[str], genre_map: GenreMap | None
) -> dict[str, tuple[float, str]]:
    """``{written name: (score, label it came from)}`` after the map; merged names keep the max.

    ``scores``: (C,) probabilities in the order of ``labels``.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    out: dict[str, tuple[float, str]] = {}
    for label, score in zip(labels, np.asarray(scores, np.float64).tolist(), strict=True):
        name = genre_map.name(label) if genre_map else label
        if name is not None and (name not in out or score > out[name][0]):
            out[name] = (score, label)
    return out


def choose(
    scores: np.ndarray,
    labels: Sequence[str],
    *,
    max_genres: int,
    min_score: float | Mapping[str, float],
    genre_map: GenreMap | None = None,
    parents: dict[str, list[str]] | None = None,
) -> list[tuple[str, float]]:
    """The genres to write or list for one file, best first, as ``(name, score)``.

    ``scores``: (C,) probabilities in the order of ``labels``. Picks are the mapped names with
    score >= ``min_score`` (one floor, or one per label: ``tag --threshold auto``), at most ``max_genres`` (ties keep label order). With ``parents``
    (:func:`genre_tree`), each pick is preceded by its ancestors, root first, each name once;
    those do not count against ``max_genres`` (see the module docstring).
    """
    names = mapped(scores, labels, genre_map)
    ranked = sorted(names.items(), key=lambda item: -item[1][0])  # stable: label order on ties
    floor = min_score.get if isinstance(min_score, Mapping) else (lambda _label: min_score)
    picks = [(n, s, label) for n, (s, label) in ranked if s >= floor(label)][: max(max_genres, 0)]
    if not parents:
        return [(n, s) for n, s, _ in picks]
    chosen: dict[str, float] = {}
    for name, score, label in picks:
        for ancestor in parents.get(label, []):
            written = genre_map.name(ancestor) if genre_map else ancestor
            if written is None or written == name:
                continue
            own = names[written][0] if written in names else score
            chosen[written] = max(chosen.get(written, 0.0), own, score)
        chosen.setdefault(name, score)
    return list(chosen.items())


def genre_choice(
    labels: Sequence[str],
    tree: Mapping[str, list[str]] | None,
    *,
    max_genres: int,
    min_score: float | Mapping[str, float],
    genre_map: str | os.PathLike | None = None,
    with_parents: bool = False,
    default_map: Mapping[str, Any] | None = None,
) -> Callable[[np.ndarray], list[tuple[str, float]]]:
    """The genre choice of ``tag`` and the beets plugin, built once: scores (C,) -> :func:`choose`.

    ``genre_map`` is a map file (loaded and checked against ``labels``), else the checkpoint's
    own ``default_map`` (published models whose tags are not all genres) applies; with_parents
    adds the model's genre ``tree`` (a warning when the checkpoint has none).
    """
    loaded = GenreMap.load(genre_map, labels) if genre_map else None
    if loaded is None and default_map:
        loaded = GenreMap.from_data(dict(default_map), labels, "the checkpoint's genre_map")
    if with_parents and not tree:
        log.warning("with parents: the checkpoint has no genre tree (trained before it kept one)")
    return partial(
        choose,
        labels=list(labels),
        max_genres=max_genres,
        min_score=min_score,
        genre_map=loaded,
        parents=dict(tree) if with_parents and tree else None,
    )


def join(chosen: Sequence[tuple[str, float]]) -> str:
    """``[("Electronic", .9), ("Techno", .8)] -> "Electronic; Techno"`` (the table's genres cell)."""
    return SEPARATOR.join(name for name, _ in chosen)
