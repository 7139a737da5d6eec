"""``genretag tag``, by concern: scan (find files), stream (decode + score through
genretag.inference), outputs (resumable tables), captions (SRT), filetags (genres into files),
command (the argument parser and the per-file loop)."""
