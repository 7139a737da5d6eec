"""Genre vocabulary: FMA's tree, the user's genre map (YAML and CSV), and the per-file choice."""

from __future__ import annotations

import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genretag.data import fma
from genretag.errors import ConfigError
from genretag.vocabulary import GenreMap, choose, genre_tree, join

LABELS = ["Electronic", "Techno", "Rock", "Punk", "Hip-Hop", "Old-Time / Historic", "Pop"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, list[str]]:
    """The tree of the real genres.csv (read through fma.read_genres, which wants its folder)."""
    meta = tmp_path_factory.mktemp("fma_metadata")
    (meta / "genres.csv").write_bytes(
        resources.files("genretag.data").joinpath("fma_genres.csv").read_bytes()
    )
    genres = fma.read_genres(meta)
    return genre_tree(genres, [*LABELS, "Bass Drum", "Sound Effects", "Minimal Electronic"])


def scores(**by_label: float) -> np.ndarray:
    return np.array([by_label.get(label, 0.0) for label in LABELS], np.float32)


def test_tree_is_ancestors_root_first_and_plain_data(tree):
    assert tree["Techno"] == ["Electronic"]
    assert tree["Electronic"] == [] and tree["Old-Time / Historic"] == []
    assert tree["Punk"] == ["Rock"]
    assert tree["Bass Drum"] == []  # a Freesound class is not in FMA's tree
    # deeper: Sound Effects -> Novelty -> Experimental (parents, not top_level shortcuts)
    assert tree["Sound Effects"][0] == "Experimental" and len(tree["Sound Effects"]) >= 2
    assert pickle.loads(pickle.dumps(tree)) == tree
    assert all(type(k) is str and all(type(a) is str for a in v) for k, v in tree.items())


def test_max_and_min_best_first():
    s = scores(Rock=0.9, Techno=0.6, Pop=0.4, Punk=0.2)
    assert choose(s, LABELS, max_genres=2, min_score=0.1) == [
        ("Rock", pytest.approx(0.9)),
        ("Techno", pytest.approx(0.6)),
    ]
    assert [n for n, _ in choose(s, LABELS, max_genres=5, min_score=0.3)] == [
        "Rock",
        "Techno",
        "Pop",
    ]
    assert choose(s, LABELS, max_genres=3, min_score=0.95) == []


def test_parents_come_first_once_and_do_not_count(tree):
    s = scores(Techno=0.9, Punk=0.8, Electronic=0.7, Rock=0.3)
    chosen = choose(s, LABELS, max_genres=3, min_score=0.5, parents=tree)
    # three picks (Techno, Punk, Electronic) plus Rock brought in by Punk; Electronic once
    assert [n for n, _ in chosen] == ["Electronic", "Techno", "Rock", "Punk"]
    assert join(chosen) == "Electronic; Techno; Rock; Punk"
    by_name = dict(chosen)
    assert by_name["Rock"] == pytest.approx(0.8)  # at least as likely as its sub-genre
    assert by_name["Electronic"] == pytest.approx(0.9)
    one = choose(s, LABELS, max_genres=1, min_score=0.0, parents=tree)
    assert [n for n, _ in one] == ["Electronic", "Techno"]


def test_yaml_rename_merge_and_drop(tmp_path, tree):
    path = tmp_path / "genres.yaml"
    path.write_text(
        "rename:\n  Hip-Hop: Hip Hop\n  Punk: Rock   # merged\n  Old-Time / Historic: Oldies\n"
        "drop: [Pop]\n",
        encoding="utf-8",
    )
    genre_map = GenreMap.load(path, LABELS)
    s = scores(
        **{"Hip-Hop": 0.7, "Punk": 0.85, "Rock": 0.6, "Pop": 0.99, "Old-Time / Historic": 0.5}
    )
    chosen = choose(s, LABELS, max_genres=5, min_score=0.4, genre_map=genre_map)
    assert chosen == [
        ("Rock", pytest.approx(0.85)),  # max of Punk and Rock, listed once
        ("Hip Hop", pytest.approx(0.7)),
        ("Oldies", pytest.approx(0.5)),
    ]
    # a merge into the parent never lists the parent twice
    with_parents = choose(s, LABELS, max_genres=1, min_score=0.4, genre_map=genre_map, parents=tree)
    assert [n for n, _ in with_parents] == ["Rock"]


def test_yaml_whitelist_drops_everything_else_ancestors_too(tmp_path, tree):
    path = tmp_path / "genres.yml"
    path.write_text("keep: [Techno, Rock]\nrename: {Rock: Guitar}\n", encoding="utf-8")
    genre_map = GenreMap.load(path, LABELS)
    s = scores(Pop=0.99, Techno=0.9, Rock=0.6, Electronic=0.95)
    assert [n for n, _ in choose(s, LABELS, max_genres=5, min_score=0.1, genre_map=genre_map)] == [
        "Techno",
        "Guitar",
    ]
    chosen = choose(s, LABELS, max_genres=5, min_score=0.1, genre_map=genre_map, parents=tree)
    assert "Electronic" not in dict(chosen)


def test_csv_form_with_header_and_empty_genre_drops(tmp_path):
    path = tmp_path / "genres.csv"
    path.write_text(
        'label,genre\nHip-Hop,Rap\nPop,\n"Old-Time / Historic","Oldies, Historic"\n',
        encoding="utf-8",
    )
    genre_map = GenreMap.load(path, LABELS)
    s = scores(**{"Hip-Hop": 0.8, "Pop": 0.9, "Old-Time / Historic": 0.7, "Rock": 0.6})
    assert [n for n, _ in choose(s, LABELS, max_genres=5, min_score=0.5, genre_map=genre_map)] == [
        "Rap",
        "Oldies, Historic",
        "Rock",
    ]


@pytest.mark.parametrize(
    "name, text",
    [
        ("map.yaml", "rename:\n  Hip Hop: Rap\n"),
        ("map.yaml", "drop: [Tecno]\n"),
        ("map.csv", "Hip Hop,Rap\n"),
    ],
)
def test_unknown_label_is_one_line_naming_file_label_and_close_matches(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        GenreMap.load(path, LABELS)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    wrong = "Tecno" if "Tecno" in text else "Hip Hop"
    right = "Techno" if wrong == "Tecno" else "Hip-Hop"
    assert repr(wrong) in message and repr(right) in message


@pytest.mark.parametrize(
    "text, words",
    [
        ("genres:\n  Rock: Guitar\n", "unknown section 'genres'"),
        ("keep: [Rock]\ndrop: [Pop]\n", "not both"),
        ("rename: {Pop: Schlager}\ndrop: [Pop]\n", "both renamed and dropped"),
        ("rename: [Pop]\n", "rename: must map"),
        ("rename: {Pop: [a, b]}\n", "must be a name or null"),
        ("rename: {Pop: x\n", "not valid YAML"),
        ("keep: [Rock]\nrename: {Pop: Schlager}\n", "not in keep"),
    ],
)
def test_bad_yaml_is_one_line(tmp_path, text, words):
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=words) as error:
        GenreMap.load(path, LABELS)
    assert "\n" not in str(error.value)


def test_yaml_never_builds_objects(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("rename: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        GenreMap.load(path, LABELS)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        GenreMap.load(tmp_path / "none.yaml", LABELS)
    (tmp_path / "map.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.csv"):
        GenreMap.load(tmp_path / "map.json", LABELS)


def test_the_table_shows_exactly_what_write_tags_writes(tmp_path: Path) -> None:
    """--genre-map, --with-parents, --max-genres and --min-score decide the table's genres
    column and the files' genre tags alike (what is reviewed is what gets written)."""
    import torch

    from genretag.tagger.command import main as tag_main
    from genretag.task import TaggingTask
    from tests.conftest import save_model
    from tests.test_tagging import make_tagged, read_genres

    labels = ["Electronic", "Techno", "Rock", "Hip-Hop"]
    tree = {"Electronic": [], "Techno": ["Electronic"], "Rock": [], "Hip-Hop": []}
    torch.manual_seed(3)
    model = TaggingTask(labels=labels, window_seconds=1.0, channels=(4, 8, 8, 8), gru_hidden=8,
                        gru_layers=1, spec_augment=False, genre_tree=tree)  # fmt: skip
    with torch.no_grad():  # a sharp head: the files get different genres
        model.head[1].weight.normal_(0, 3.0)
    ckpt = save_model(model, tmp_path / "m.ckpt")
    files = [p for p in make_tagged(tmp_path / "lib") if read_genres(p) == []]
    (tmp_path / "map.yaml").write_text("rename:\n  Hip-Hop: Hip Hop\n  Rock: Rock & Roll\n")
    out = tmp_path / "tags.csv"
    choice = ["--genre-map", str(tmp_path / "map.yaml"), "--with-parents", "--max-genres", "2",
              "--min-score", "0.2"]  # fmt: skip
    args = [*map(str, files), "--ckpt", str(ckpt), "--out", str(out), *choice]
    assert tag_main(args) == 0  # the review: nothing is written yet
    reviewed = pd.read_csv(out, keep_default_na=False).set_index("path")["genres"]
    assert tag_main([*args, "--write-tags", "--mode", "overwrite"]) == 0
    written = {str(p): "; ".join(read_genres(p)) for p in files}
    assert written == reviewed.to_dict()
    assert any("Electronic; Techno" in g for g in written.values()), written  # parents first
    assert not any(g in ("Rock", "Hip-Hop") for v in written.values() for g in v.split("; "))
