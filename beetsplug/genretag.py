"""beets plugin: genres from genretag checkpoints, decided the way ``genretag tag`` decides them.

Enable it in beets' config.yaml::

    plugins: genretag
    genretag:
      ckpt: ~/models/best.ckpt      # or a list of checkpoints: an ensemble
      auto: no                      # yes: tag the items of each import
      max_genres: 3
      min_score: 0.3
      with_parents: no              # yes: "Electronic; Techno" (FMA's parents first)
      genre_map: null               # a .yaml/.csv genre map (see genretag.vocabulary)
      force: no                     # yes: retag items that already have a genre
      workers: null                 # decoding (on the CPU also scoring) processes, as `genretag tag`
      batch_size: null              # windows per batch (8 on CPU, 64 on GPU)
      device: auto                  # auto, cpu, cuda, cuda:1 ...
      precision: auto               # auto (bf16 on CPUs with AMX/AVX-512 BF16; musicnn: fp32 or onnx), fp32, bf16, int8, onnx
      ensemble: arithmetic          # how several checkpoints are averaged (or geometric)

and run ``beet genretag [-p] [-f] [QUERY]``.

Per command (or per import session) the checkpoints load once, as data
(:func:`genretag.inference.load_predictor`); the items' files are decoded on worker processes and
scored in batches by :func:`genretag.tagger.stream.infer`, the same inference as
``genretag tag``, and :func:`genretag.vocabulary.choose` picks the names. Then, like beets' own
lastgenre and autobpm plugins: decide (the genres of each finished file) -> record (the item's
``genres`` list and/or ``genre`` text, whichever fields this beets has; ``item.store()``) ->
write (``item.try_write()``, only when beets' ``import.write`` says so; during an import the
importer writes the files itself afterwards). A file that does not decode is a warning and is
skipped; the other items are still tagged.

Nothing heavy is imported until the plugin tags something, so ``beet ls`` stays fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beets import library, ui
from beets.plugins import BeetsPlugin
from beets.ui import Subcommand, UserError

if TYPE_CHECKING:
    from beets.importer import ImportSession, ImportTask

    from genretag.inference import Predictor

PROGRESS_SECONDS = 10.0  # a progress line at most this often during a long command
DEFAULTS: dict[str, Any] = {
    "ckpt": None,
    "auto": False,
    "max_genres": 3,
    "min_score": 0.3,
    "with_parents": False,
    "genre_map": None,
    "force": False,
    "workers": None,
    "batch_size": None,
    "device": "auto",
    "precision": "auto",
    "ensemble": "arithmetic",
}


def genre_fields() -> tuple[str, ...]:
    """The item fields this beets keeps genres in: ``genres`` (a list, beets >= 2.?) and/or
    ``genre`` (one text, older beets)."""
    return tuple(f for f in ("genres", "genre") if f in library.Item._fields)


def existing_genres(item: library.Item) -> list[str]:
    """The genres ``item`` has now (a list, from whichever genre field this beets has)."""
    values = item.get("genres", with_album=False) if "genres" in genre_fields() else None
    if values:
        return [str(v) for v in values if str(v).strip()]
    text = item.get("genre", with_album=False) if "genre" in genre_fields() else None
    return [text] if text else []


@dataclass
class Settings:
    """The ``genretag:`` section of beets' config, checked."""

    ckpt: list[str]
    max_genres: int
    min_score: float
    with_parents: bool
    genre_map: str | None
    force: bool
    workers: int | None
    batch_size: int | None
    device: str
    ensemble: str
    precision: str


@dataclass
class Outcome:
    """What a run did: items tagged (decoded and scored), the items whose genres changed (or
    would, with pretend), items skipped for having a genre, and files that failed to decode."""

    tagged: int = 0
    changed: list[library.Item] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0


class GenreTagPlugin(BeetsPlugin):
    """``beet genretag`` and, with ``auto: yes``, genres on import."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.config.add(DEFAULTS)
        self._predictor: Predictor | None = None
        self._choose: Callable[[Any], list[tuple[str, float]]] | None = None
        self._last_progress = 0.0
        self._unwritten: set[int] = set()  # items tagged on import that the importer won't write
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.import_task_files)

    # -- settings ----------------------------------------------------------------------------
    def settings(self, force: bool = False) -> Settings:
        """The plugin's config, checked; a wrong value is a one-line UserError naming it."""
        c = self.config
        if not c["ckpt"].get():
            raise UserError(
                "genretag: set genretag.ckpt in beets' config to a checkpoint file "
                "(or a list of checkpoint files: an ensemble)"
            )
        raw = c["ckpt"].get()
        views = [c["ckpt"][i] for i in range(len(raw))] if isinstance(raw, list) else [c["ckpt"]]
        ckpt = [self._checkpoint(view) for view in views]
        genre_map = self._filename(c["genre_map"], "genre_map") if c["genre_map"].get() else None
        return Settings(
            ckpt=ckpt,
            max_genres=self._number("max_genres", int, low=1),
            min_score=self._number("min_score", float, low=0.0, high=1.0),
            with_parents=self._flag("with_parents"),
            genre_map=genre_map,
            force=force or self._flag("force"),
            workers=self._number("workers", int, low=0, optional=True),
            batch_size=self._number("batch_size", int, low=1, optional=True),
            device=str(c["device"].get() or "auto"),
            ensemble=self._choice("ensemble", ("arithmetic", "geometric")),
            precision=self._choice("precision", ("auto", "fp32", "bf16", "int8", "onnx")),
        )

    def _checkpoint(self, view: Any) -> str:
        """A checkpoint file, or a published model's name (``musicnn-msd``) kept as it is."""
        from genretag.pretrained.musicnn import is_published

        value = view.get()
        return value if isinstance(value, str) and is_published(value) else self._filename(view, "")

    def _filename(self, view: Any, key: str) -> str:
        try:
            return view.as_filename()  # ~ expanded; relative to the config file's folder
        except Exception as error:  # confuse's ConfigError: a list or a number given
            raise UserError(str(error)) from None  # confuse names it: genretag.ckpt#1: ...

    def _flag(self, key: str) -> bool:
        value = self.config[key].get()
        if not isinstance(value, bool):
            raise UserError(f"genretag.{key}: use yes or no, got {value!r}")
        return value

    def _number(
        self,
        key: str,
        kind: type,
        low: float,
        high: float | None = None,
        optional: bool = False,
    ) -> Any:
        value = self.config[key].get()
        if value is None and optional:
            return None
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        bad = bad or (kind is int and not float(value).is_integer())
        if bad or value < low or (high is not None and value > high):
            span = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            what = "a whole number" if kind is int else "a number"
            raise UserError(f"genretag.{key}: must be {what} {span}, got {value!r}")
        return kind(value)

    def _choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.config[key].get()
        if value not in choices:
            raise UserError(f"genretag.{key}: use one of {', '.join(choices)}, got {value!r}")
        return str(value)

    # -- model ---------------------------------------------------------------------------------
    def _load(self, settings: Settings) -> tuple[Predictor, Callable[[Any], list]]:
        """The predictor and the genre choice; loaded once and kept (an import calls this per
        album). A bad checkpoint or genre map is a one-line UserError."""
        if self._predictor is not None and self._choose is not None:
            return self._predictor, self._choose
        from genretag import system, vocabulary
        from genretag.errors import ConfigError
        from genretag.inference import load_predictor

        try:
            device = system.device(settings.device)  # the same rules as `genretag tag --device`
            precision = system.precision(settings.precision)  # as `tag --precision`
            predictor = load_predictor(
                settings.ckpt, device, settings.ensemble, precision=precision
            )
            self._choose = vocabulary.genre_choice(  # the same choice as `genretag tag`
                predictor.labels,
                predictor.genre_tree,
                max_genres=settings.max_genres,
                min_score=settings.min_score,
                genre_map=settings.genre_map,
                with_parents=settings.with_parents,
                default_map=predictor.genre_map,
            )
        except ConfigError as error:
            raise UserError(_beets_names(str(error))) from None
        except OSError as error:
            raise UserError(f"genretag: cannot load {settings.ckpt}: {error}") from None
        self._predictor = predictor
        return predictor, self._choose

    # -- beets hooks -----------------------------------------------------------------------------
    def commands(self) -> list[Subcommand]:
        cmd = Subcommand("genretag", help="tag genres from the audio with a genretag checkpoint")
        cmd.parser.add_option(
            "-p",
            "--pretend",
            action="store_true",
            default=False,
            help="show the genres that would change; change nothing",
        )
        cmd.parser.add_option(
            "-f",
            "--force",
            action="store_true",
            default=False,
            help="retag items that already have a genre",
        )
        cmd.func = self.command
        return [cmd]

    def command(self, lib: library.Library, opts: Any, args: list[str]) -> None:
        settings = self.settings(force=opts.force)
        self._predictor = self._choose = None  # a command loads the checkpoints afresh
        items = list(lib.items(args))
        self.tag_items(
            items, settings, write=ui.should_write(), pretend=opts.pretend, progress=True
        )

    def imported(self, session: ImportSession, task: ImportTask) -> None:
        """Import stage (``auto: yes``): an album's items go through inference together.

        The files are not written here: the stage runs before the importer copies or moves them.
        The importer writes them afterwards when ``import.write`` is on and it applied metadata;
        :meth:`import_task_files` writes the ones it leaves (as-is imports, ``-A``).
        """
        items = list(task.imported_items())
        outcome = self.tag_items(items, self.settings(), write=False, pretend=False)
        self._unwritten.update(item.id for item in outcome.changed)

    def import_task_files(self, session: ImportSession, task: ImportTask) -> None:
        """After the importer placed the files: write the genres it did not (as-is imports)."""
        items = [item for item in task.imported_items() if item.id in self._unwritten]
        self._unwritten.difference_update(item.id for item in items)
        written = bool(getattr(task, "apply", False))
        written = written or getattr(task.choice_flag, "name", "") == "RETAG"
        if items and session.config["write"].get(bool) and not written:
            for item in items:
                item.try_write()

    # -- decide -> record -> write ---------------------------------------------------------------
    def tag_items(
        self,
        items: Iterable[library.Item],
        settings: Settings,
        write: bool,
        pretend: bool,
        progress: bool = False,
    ) -> Outcome:
        """Tag ``items`` in batches; returns what happened (see :class:`Outcome`)."""
        outcome = Outcome()
        by_path: dict[str, list[library.Item]] = {}
        for item in items:
            if existing_genres(item) and not settings.force:
                self._log.debug("{}: has a genre already (force: yes retags it)", item.filepath)
                outcome.skipped += 1
                continue
            by_path.setdefault(str(Path(os.fsdecode(item.path))), []).append(item)
        if not by_path:
            self._summary(outcome, pretend, progress)
            return outcome
        fields = genre_fields()
        if not fields:
            raise UserError("genretag: this beets has neither a genre nor a genres field")
        predictor, choose = self._load(settings)
        for path, error, scores in self._decide(list(by_path), predictor, settings):
            for item in by_path.get(path, []):
                if error is not None:
                    self._log.warning("{}: {}", item.filepath, error)
                    outcome.failed += 1
                    continue
                outcome.tagged += 1
                if self._record(item, [name for name, _ in choose(scores)], fields, pretend):
                    outcome.changed.append(item)
                    if write and not pretend:
                        item.try_write()
            done = outcome.tagged + outcome.failed
            if progress and time.monotonic() - self._last_progress > PROGRESS_SECONDS:
                self._log.info("{}/{} items", done, sum(map(len, by_path.values())))
                self._last_progress = time.monotonic()
        self._summary(outcome, pretend, progress)
        return outcome

    def _decide(
        self, paths: list[str], predictor: Predictor, settings: Settings
    ) -> Iterable[tuple[str, str | None, Any]]:
        """``(path, error or None, scores (C,))`` for each file, as batches finish."""
        from genretag import system
        from genretag.tagger.stream import infer

        on = predictor.device  # the defaults of `genretag tag` (genretag.system)
        workers = system.default_workers(on) if settings.workers is None else settings.workers
        batch_size = settings.batch_size or system.default_batch_size(on)
        self._last_progress = time.monotonic()
        with system.inference_threads(on, workers):
            files = [Path(p) for p in paths]
            for results in infer(files, predictor, predictor.window, batch_size, workers):
                for result in results:
                    if result.truncated is not None:  # tagged from what decodes, as `tag` does
                        self._log.warning("{}: {}", result.path, result.truncated)
                    yield str(result.path), result.error, result.scores

    def _record(
        self, item: library.Item, genres: list[str], fields: Sequence[str], pretend: bool
    ) -> bool:
        """Set the genre fields; show and store a change (pretend: show only). True if changed."""
        from genretag.vocabulary import SEPARATOR

        if genres == existing_genres(item):
            return False
        if "genres" in fields:
            item["genres"] = genres
        if "genre" in fields:
            item["genre"] = SEPARATOR.join(genres)
        ui.show_model_changes(item, fields=list(fields))
        if not pretend:
            item.store()
        return True

    def _summary(self, outcome: Outcome, pretend: bool, progress: bool) -> None:
        changed = "would change" if pretend else "changed"
        text = (
            f"tagged {outcome.tagged} items, {len(outcome.changed)} {changed}, "
            f"{outcome.skipped} skipped (they have a genre; -f retags them)"
        )
        if outcome.failed:
            self._log.warning("{}, {} FAILED (see above)", text, outcome.failed)
        elif progress:
            self._log.info("{}", text)


def _beets_names(message: str) -> str:
    """genretag's messages name command-line options; here they are config keys."""
    message = message.replace("--genre-map ", "genretag.genre_map ")
    message = message.replace("--ckpt ", "genretag.ckpt ")
    return message if message.startswith("genretag.") else f"genretag: {message}"
