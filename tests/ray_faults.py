"""Faults in the Ray workers of tests/test_cluster.py, installed by ``worker_process_setup_hook``.

With ``GENRETAG_TEST_RAY_FAULTS=<folder>``: when ``<folder>/die-decoding`` names a file, the
worker that decodes it exits on the spot (``os._exit``: no cleanup, as a native crash or a
lost node), once: ``<folder>/died-decoding`` then exists and Ray's retry goes through.
``die-scoring`` does the same to the predictor actor that scores the file. Without the
variable, nothing is changed.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = "GENRETAG_TEST_RAY_FAULTS"


def _maybe_die(stage: str, path: object) -> None:
    folder = Path(os.environ[FOLDER])
    target, marker = folder / f"die-{stage}", folder / f"died-{stage}"
    if target.exists() and Path(str(path)).name == target.read_text().strip():
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
        os._exit(1)


def install() -> None:
    if not os.environ.get(FOLDER):
        return
    from genretag.cluster import decode, predict

    decode_file, call = decode.decode_file, predict.Tagger.__call__

    def dying_decode(path, cut):  # noqa: ANN001, ANN202
        _maybe_die("decoding", path)
        return decode_file(path, cut)

    def dying_call(self, batch):  # noqa: ANN001, ANN202
        for path in batch["path"]:
            _maybe_die("scoring", path)
        return call(self, batch)

    decode.decode_file = dying_decode
    predict.Tagger.__call__ = dying_call
