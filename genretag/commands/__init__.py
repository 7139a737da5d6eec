"""The commands that are not Lightning's and not ``tag`` (genretag.tagger): each module has a
``main(argv) -> int`` that genretag.cli dispatches to, and stays thin over the library below it
(download, prepare, export, compare, baseline, embed, spread-labels, self-train)."""
