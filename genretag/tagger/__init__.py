"""``genretag tag``, by concern: scan (find files), stream (decode + score through
genretag.inference), outputs (resumable tables), captions (SRT), filetags (genres into files),
options (the argument parser and its checks), command (the run's plan and the per-file loop)."""
