"""What musicnn's own code computes on genretag's reference clips: tests/data/musicnn_reference.npz.

Runs in musicnn's TensorFlow virtualenv, outside the repository, where genretag is not installed
(the clips come from genretag/pretrained/clips.py, loaded by path: numpy only):

    python3 -m venv /work/venv-musicnn-ref
    /work/venv-musicnn-ref/bin/pip install tensorflow==2.21.0 tf-keras==2.21.0 "numpy<2" \
        librosa soundfile
    /work/venv-musicnn-ref/bin/pip install --no-deps musicnn==0.1.0
    TF_USE_LEGACY_KERAS=1 /work/venv-musicnn-ref/bin/python benchmarks/musicnn_reference.py

For each clip (written to a temporary 16 kHz float WAV) it takes musicnn's log-mel patches from
``musicnn.extractor.batch_data`` and runs the graph of ``musicnn.models.define_model`` restored
from the package's checkpoint, all patches at once; it checks that ``musicnn.extractor.extractor``
gives the same taggram. Models: MSD_musicnn, MTT_musicnn, MSD_vgg, MTT_vgg. The .npz holds, per
clip: ``logmel/<clip>`` (P, 187, 96), ``<model>/probs/<clip>`` (P, 50) and
``<model>/penultimate/<clip>``, what feeds the last dense layer: (P, 200) for musicnn, (P, 256)
for the vgg (its last pool (P, 2, 1, 128) flattened as TensorFlow flattens it); plus
``audio_sum/<clip>`` (to check the clips were regenerated alike) and the versions used. It loads
with ``np.load(..., allow_pickle=False)``.

``--stft-pad``: librosa >= 0.10 pads the STFT with zeros; musicnn was trained and published with
librosa 0.6-0.7, which reflected. The default, reflect, reproduces musicnn as trained (librosa's
``melspectrogram`` is called with ``pad_mode="reflect"``; nothing else changes). It only touches
the first frame of a file.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")


def load_clips() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("clips", ROOT / "genretag/pretrained/clips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_clips()


def run_graph(model: str, batch: np.ndarray, n_labels: int):
    """musicnn's graph for ``model`` on (P, 187, 96): (probabilities (P, 50), penultimate (P, D)).

    The penultimate is musicnn's last output: its dense layer's (P, 200) for musicnn, the last
    pool (P, 2, 1, 128) for the vgg, flattened here row-major as ``layers.flatten`` does."""
    import musicnn
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, batch.shape[1], batch.shape[2]])
        is_training = tf.compat.v1.placeholder(tf.bool)
        out = models.define_model(x, is_training, model, n_labels)
        y, penultimate = tf.nn.sigmoid(out[0]), out[-1]
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().restore(sess, os.path.dirname(musicnn.__file__) + f"/{model}/")
        probs, features = sess.run([y, penultimate], feed_dict={x: batch, is_training: False})
    return probs, features.reshape(len(features), -1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stft-pad", choices=("reflect", "constant"), default="reflect")
    parser.add_argument("--out", type=Path, default=ROOT / "tests/data/musicnn_reference.npz")
    args = parser.parse_args()

    import librosa
    import soundfile as sf
    import tensorflow as tf
    from musicnn import configuration, extractor

    librosa.feature.melspectrogram = functools.partial(
        librosa.feature.melspectrogram, pad_mode=args.stft_pad
    )
    out: dict[str, np.ndarray] = {}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio in load_clips().items():
            path = os.path.join(tmp, f"{name}.wav")
            sf.write(path, audio, 16000, subtype="FLOAT")
            batch, _ = extractor.batch_data(path, 187, 187)
            out[f"logmel/{name}"] = batch.astype(np.float32)
            out[f"audio_sum/{name}"] = np.array(np.abs(audio.astype(np.float64)).sum())
            for model in MODELS:
                labels = configuration.MSD_LABELS if "MSD" in model else configuration.MTT_LABELS
                probs, penultimate = run_graph(model, batch, len(labels))
                taggram, _ = extractor.extractor(path, model=model, extract_features=False)
                worst = max(worst, float(np.abs(taggram - probs).max()))
                out[f"{model}/probs/{name}"] = probs.astype(np.float32)
                out[f"{model}/penultimate/{name}"] = penultimate.astype(np.float32)
    import musicnn

    info = {
        "stft_pad": args.stft_pad,
        "tensorflow": tf.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "musicnn": getattr(musicnn, "__version__", "0.1.0"),
        "extractor_vs_graph_max_diff": worst,
    }
    out["info"] = np.array(json.dumps(info))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(json.dumps({**info, "out": str(args.out), "bytes": args.out.stat().st_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
