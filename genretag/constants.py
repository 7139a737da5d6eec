"""The model's defaults, stated once (after the published CRNN / music-tagging set-ups).

Every other module refers to these names: the front-end (genretag.features), the model
(genretag.task), the data modules and the decoder's default rate (genretag.data.audio).
"""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz of the waveform the model takes: audio is resampled to it when decoded
N_FFT = 512  # STFT size (32 ms at 16 kHz)
HOP_LENGTH = 256  # samples between frames (16 ms): a 10 s window has 626 frames
N_MELS = 96  # mel bands
F_MIN = 0.0  # Hz, lowest mel band edge
F_MAX = 8_000.0  # Hz, highest mel band edge (Nyquist at 16 kHz)
WINDOW_SECONDS = 10.0  # genre model: training crop and evaluation window
FSD_WINDOW_SECONDS = 3.0  # Freesound model: most FSDKaggle2018 clips are shorter than 10 s
