"""Music for the demo corpus: eight FMA root genres, each with a signature of its own.

Tempo and drum pattern (synthesized kick, snare, hi-hat, ride), harmony (power chords, triads,
7th chords, clusters), timbre (distorted saws, Karplus-Strong plucks, FM pianos and bells, bowed
strings, pads, formant voices, noise). Key, tempo, groove, mix and level vary per track; a
sub-genre changes a few traits of its root. :func:`render` gives a track's stereo audio.
Vectorised numpy: ~36 ms per 10 s clip.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SR = 44_100
CLIP_SECONDS = 10.0
N = int(SR * CLIP_SECONDS)

# ---------------------------------------------------------------------------- genre styles

MAJOR, MINOR, DORIAN = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 3, 5, 7, 9, 10)
CHROMATIC = tuple(range(12))
CHORDS = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "pow": (0, 7, 12), "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10), "dom7": (0, 4, 7, 10), "cluster": (0, 1, 6, 10),
}  # fmt: skip
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))


@dataclass(frozen=True)
class Style:
    """How a genre sounds; a sub-genre is its root's style with a few fields replaced.

    A rhythm is a step pattern over one 4/4 bar (``x`` = hit, ``steps`` long); a part is
    ``(instrument, rhythm)``; the harmony follows ``progression``, one (semitones, chord) a bar.
    """

    bpm: tuple[float, float]
    progression: tuple[tuple[int, str], ...]
    scale: tuple[int, ...] = MAJOR
    steps: int = 16  # 12: a swung triplet grid
    swing: float = 0.0  # delay of the odd steps, in steps
    free: bool = False  # Poisson onsets instead of the grid
    drums: tuple[tuple[str, str], ...] = ()
    chord: tuple[str, str] | None = None
    bass: tuple[str, str] | None = None
    lead: tuple[str, str] | None = None
    arp: bool = False  # the lead arpeggiates the chord instead of walking the scale
    voice: str | None = None  # "rap" or "sing"
    noise: float = 0.0  # level of a band-passed noise texture
    harsh: bool = False  # distort and gate that noise
    register: int = 0  # transposition, semitones
    drive: float = 1.0  # tanh distortion of the chords
    bright: float = 6000.0  # low-pass corner of the tonal parts, Hz
    reverb: float = 0.0


_8THS, _16THS = "x.x." * 4, "x" * 16
# fmt: off
ROCK = Style((112, 132), ((0, "pow"), (10, "pow"), (5, "pow"), (7, "pow")), MINOR,
             drums=(("kick", "x.......x.x....."), ("snare", "....x.......x..."), ("hat", _8THS)),
             chord=("saw", _8THS), bass=("saw", _8THS), drive=5.0, bright=3500)
ELECTRONIC = Style((122, 128), ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")), MINOR,
                   drums=(("kick", "x...x...x...x..."), ("clap", "....x.......x..."),
                          ("ohat", "..x...x...x...x.")),
                   chord=("pad", "x.......x......."), bass=("square", "..x...x...x...x."),
                   lead=("saw", "x.xxx.xxx.xxx.xx"), arp=True, bright=5000)
HIPHOP = Style((84, 96), ((0, "m7"), (5, "m7"), (8, "maj7"), (7, "m7")), DORIAN, swing=0.3,
               drums=(("boom", "x......x..x....."), ("snare", "....x.......x..."),
                      ("hat", "x.xxx.x.x.xxx.x.")),
               chord=("epiano", "x.......x......."), bass=("sub", "x......x..x....."),
               bright=2500)
JAZZ = Style((130, 170), ((2, "m7"), (7, "dom7"), (0, "maj7"), (9, "m7")), DORIAN, steps=12,
             drums=(("ride", "x..x.xx..x.x"), ("hat", "...x.....x.."), ("kick", "x.........x.")),
             chord=("epiano", "...x.....x.x"), bass=("pluck", "x..x..x..x.."),
             lead=("square", "x.xx.x..x.x."), bright=4000, reverb=0.15)
CLASSICAL = Style((60, 80), ((0, "maj"), (5, "maj"), (7, "dom7"), (0, "maj")),
                  chord=("strings", "x.......x......."), bass=("strings", "x.......x......."),
                  lead=("strings", "x...x...x.x.x..."), bright=5000, reverb=0.35)
EXPERIMENTAL = Style((60, 140), ((0, "cluster"), (3, "cluster")), CHROMATIC, free=True,
                     lead=("bell", "x...x...x...x..."), noise=0.6, bright=8000, reverb=0.3)
FOLK = Style((88, 112), ((0, "maj"), (5, "maj"), (0, "maj"), (7, "maj")),
             chord=("pluck", "x..............."), bass=("pluck", "x.......x......."),
             lead=("pluck", _8THS), arp=True, bright=7000, reverb=0.15)
POP = Style((96, 116), ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
            drums=(("kick", "x.......x......."), ("clap", "....x.......x..."),
                   ("hat", "..x...x...x...x.")),
            chord=("square", "x.......x......."), bass=("sub", _8THS),
            lead=("square", "x.x...x.x.x.x..."), bright=7000)

# Real FMA genre ids. ROOTS in pairing order: each root shares two-root tracks with both
# neighbours (Rock Electronic Hip-Hop Jazz Classical Experimental Folk Pop).
ROOTS = (12, 15, 21, 4, 5, 38, 17, 10)
STYLES: dict[int, Style] = {
    12: ROCK,
    25: replace(ROCK, bpm=(172, 196), drive=9.0, bright=4500,  # Punk
                progression=((0, "pow"), (5, "pow"), (7, "pow"), (5, "pow")),
                drums=(("kick", "x...x...x...x..."), ("snare", "..x...x...x...x."),
                       ("hat", _8THS))),
    31: replace(ROCK, bpm=(96, 116), chord=("saw", _16THS), register=-5, drive=14.0,  # Metal
                progression=((0, "pow"), (1, "pow"), (0, "pow"), (3, "pow")),
                drums=(("kick", _16THS), ("snare", "....x.......x..."),
                       ("ohat", "x...x...x...x..."))),
    15: ELECTRONIC,
    181: replace(ELECTRONIC, bpm=(130, 138), progression=((0, "min"),), chord=None,  # Techno
                 bass=("sub", _8THS), bright=3000,
                 drums=(("kick", "x...x...x...x..."), ("hat", _16THS),
                        ("ohat", "..x...x...x...x."))),
    42: replace(ELECTRONIC, bpm=(64, 80), drums=(), chord=("pad", "x..............."),
                bass=None, noise=0.15, reverb=0.5),  # Ambient Electronic
    21: HIPHOP,
    539: replace(HIPHOP, voice="rap"),  # Rap
    542: replace(HIPHOP, bpm=(96, 108), drums=(("boom", "x.........x....."),  # Breakbeat
                 ("snare", "....x..x.x..x..."), ("hat", _16THS))),
    4: JAZZ,
    74: replace(JAZZ, free=True, scale=CHROMATIC, lead=("square", "x" * 12),  # Free-Jazz
                drums=(("ride", "x..x.xx..x.x"), ("snare", "..x..x..x.x."))),
    179: replace(JAZZ, bpm=(160, 200), chord=("brass", "x.....x....."),  # Big Band/Swing
                 drums=(("ride", "x..x.xx..x.x"), ("snare", "...x.....x.."),
                        ("kick", "x..x..x..x.."))),
    5: CLASSICAL,
    442: replace(CLASSICAL, chord=("pluck", _8THS),  # Chamber Music
                 bass=("strings", "x...x...x...x...")),
    659: replace(CLASSICAL, free=True, scale=CHROMATIC,  # Contemporary Classical
                 progression=((0, "cluster"), (6, "cluster")), lead=("bell", "x...x...x...x...")),
    38: EXPERIMENTAL,
    32: replace(EXPERIMENTAL, noise=1.0, harsh=True, lead=None),  # Noise
    47: replace(EXPERIMENTAL, bpm=(40, 60), free=False, chord=("strings", "x..............."),
                bass=("pad", "x..............."), lead=None, noise=0.2),  # Drone
    17: FOLK,
    103: replace(FOLK, voice="sing"),  # Singer-Songwriter
    33: replace(FOLK, scale=DORIAN, chord=("pad", "x..............."), noise=0.1,  # Psych-Folk
                reverb=0.45, progression=((0, "min"), (10, "maj"), (0, "min"), (5, "maj"))),
    10: POP,
    362: replace(POP, chord=("saw", _8THS), bass=("square", _8THS)),  # Synth Pop
    76: replace(POP, chord=("bell", "x.......x......."), noise=0.25,  # Experimental Pop
                reverb=0.3),
}
# fmt: on

# ---------------------------------------------------------------------------- synthesis
# float32 maths and int32 table look-ups: numpy's float64 sin and float->int64 casts are
# 10-30x slower, and the synthesis must stay well below the MP3 encoding time.

F32 = np.float32
TABLE = 2048  # wavetable length
_T = np.arange(N + SR, dtype=F32) / SR  # the time axis every note slices


def _wavetable(amps: np.ndarray) -> np.ndarray:
    """One period (TABLE,) with harmonic k+1 at amplitude amps[k], peak 1."""
    spectrum = np.zeros(TABLE // 2 + 1, complex)
    spectrum[1 : len(amps) + 1] = amps
    table = np.fft.irfft(spectrum, TABLE)
    return (table / np.abs(table).max()).astype(F32)


_K = np.arange(1, 25)
TABLES = {
    "sine": _wavetable(np.ones(1)),
    "saw": _wavetable(1 / _K),
    "square": _wavetable(np.where(_K % 2 == 1, 1 / _K, 0)),
    "soft": _wavetable(np.array([1, 0.4, 0.15, 0.06])),
}
# instrument -> (wavetable, attack s, decay s, vibrato depth); pluck, epiano, bell: see _note
INSTRUMENTS = {
    "saw": ("saw", 0.005, 0.6, 0.0), "square": ("square", 0.01, 0.4, 0.004),
    "pad": ("soft", 0.4, 8.0, 0.003), "strings": ("saw", 0.15, 6.0, 0.008),
    "sub": ("sine", 0.005, 0.5, 0.0), "brass": ("saw", 0.03, 0.3, 0.005),
}  # fmt: skip


def _look(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``table`` at ``phase`` (in periods, any shape) -> same shape."""
    return table[(phase * TABLE).astype(np.int32) & (TABLE - 1)]


def _midi(note: np.ndarray | float) -> np.ndarray:
    """MIDI note number(s) -> frequency in Hz."""
    return (440.0 * 2.0 ** ((np.asarray(note, float) - 69) / 12)).astype(F32)


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    """Linear attack, exponential decay, 5 ms release -> (n,)."""
    t = _T[:n]
    env = np.minimum(F32(1), t / F32(attack)) * np.exp(-t / F32(decay))
    env[n - min(n, 220) :] *= np.linspace(1, 0, min(n, 220), dtype=F32)
    return env


def _osc(
    table: np.ndarray,
    freqs: np.ndarray,
    n: int,
    rng: np.random.Generator,
    vibrato: float = 0.0,
    glide: float = 0.0,
) -> np.ndarray:
    """Wavetable oscillators at ``freqs`` (k,) summed -> (n,); 5.5 Hz vibrato, linear glide."""
    t = _T[:n]
    warp = t + F32(vibrato / 34.6) * _look(TABLES["sine"], F32(5.5) * t) + F32(glide / 2) * t * t
    return _look(table, np.outer(freqs, warp) + rng.random((len(freqs), 1), F32)).sum(axis=0)


def _fm(freqs: np.ndarray, n: int, ratio: float, decay: float) -> np.ndarray:
    """FM electric piano (ratio 1) or bell (ratio 3.5), summed over freqs (k,) -> (n,)."""
    t, sine = _T[:n], TABLES["sine"]
    phase = np.outer(freqs, t)
    mod = F32(0.3) * np.exp(-t / F32(decay / 3)) * _look(sine, F32(ratio) * phase)
    return _look(sine, phase + mod).sum(axis=0) * _env(n, 0.002, decay)


def _pluck(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string, computed a period at a time -> (n,)."""
    p = max(2, round(SR / freq))
    y = np.zeros(n + 2 * p, F32)
    burst = rng.uniform(-1, 1, p + 1).astype(F32)
    y[: p + 1] = (burst + np.roll(burst, 1)) / 2
    for k in range(p + 1, len(y), p):  # y[i] = 0.497 (y[i - p] + y[i - p - 1])
        end = min(k + p, len(y))
        y[k:end] = F32(0.497) * (y[k - p : end - p] + y[k - p - 1 : end - p - 1])
    return y[:n] * _env(n, 0.001, 10.0)


def _note(inst: str, notes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A note or chord (MIDI numbers (k,)) on ``inst`` for n samples -> (n,)."""
    freqs = _midi(notes)
    if inst == "pluck":
        return sum(_pluck(f, n, rng) for f in freqs)
    if inst in ("epiano", "bell"):
        return _fm(freqs, n, 1.0, 1.2) if inst == "epiano" else _fm(freqs, n, 3.5, 2.0)
    table, attack, decay, vibrato = INSTRUMENTS[inst]
    return _osc(TABLES[table], freqs, n, rng, vibrato) * _env(n, attack, decay)


def _vowel(f0: float, n: int, rng: np.random.Generator, vibrato: float, glide: float) -> np.ndarray:
    """A sung or spoken vowel: the harmonics of f0 under random formants -> (n,)."""
    harmonics = np.arange(1, int(5000 / f0)) * f0
    formants = VOWELS[rng.integers(len(VOWELS))]
    amps = sum(np.exp(-0.5 * ((harmonics - f) / (50 + 0.05 * f)) ** 2) for f in formants)
    table = _wavetable(amps * (harmonics / f0) ** -0.3 + 0.02)
    return _osc(table, np.array([f0], F32), n, rng, vibrato, glide) * _env(n, 0.02, 0.4)


def _drums(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A drum kit tuned for one track: name -> one hit (0.6 s,)."""
    t, sine = _T[: int(0.6 * SR)], TABLES["sine"]
    j = rng.uniform(0.85, 1.15, 8).astype(F32)
    click = np.diff(rng.standard_normal(len(t), F32), prepend=F32(0))  # bright noise
    hiss = np.diff(click, prepend=F32(0)) / 3  # brighter still

    def decay(tau: float) -> np.ndarray:
        return np.exp(-t / F32(tau))

    def sweep(f0: float, f1: float, tau: float) -> np.ndarray:  # a falling sine
        return _look(sine, np.cumsum(f1 + (f0 - f1) * decay(0.03)) / SR) * decay(tau)

    bursts = sum(decay(0.01) * np.roll(t >= 0, int(d * SR)) for d in (0, 0.011, 0.023))
    metal = _look(sine, np.outer([3150, 4230, 5370, 6810], t * j[6]).astype(F32)).sum(axis=0)
    return {
        "kick": sweep(160 * j[0], 50 * j[1], 0.15 * j[2]),
        "boom": 1.2 * sweep(120 * j[0], 45 * j[1], 0.45 * j[2]),
        "snare": 0.6 * click * decay(0.08 * j[3]) + 0.4 * _look(sine, 185 * j[4] * t) * decay(0.04),
        "clap": 0.5 * click * (bursts + 0.4 * decay(0.08)),
        "hat": 0.5 * hiss * decay(0.02 * j[5]),
        "ohat": 0.3 * hiss * decay(0.15),
        "ride": (0.06 * metal + 0.3 * hiss) * decay(0.5 * j[7]),
    }


def _onsets(style: Style, rhythm: str, bar: float, rng: np.random.Generator) -> np.ndarray:
    """Hit times (s) of ``rhythm`` within the clip: the grid from a random phase, or Poisson."""
    hits = [i for i, c in enumerate(rhythm) if c == "x"]
    if style.free:
        gaps = rng.exponential(bar / len(hits), int(2 * CLIP_SECONDS * len(hits) / bar) + 8)
        times = np.cumsum(gaps) - gaps[0]
    else:
        grid = np.array([h + style.swing * (h % 2) for h in hits]) * bar / style.steps
        times = (np.arange(int(CLIP_SECONDS / bar) + 2)[:, None] * bar + grid).ravel()
        times -= rng.uniform(0, bar)
    return times[(times >= 0) & (times < CLIP_SECONDS)]


def _pitches(
    style: Style, role: str, i: int, chord: np.ndarray, walk: list[int], rng: np.random.Generator
) -> np.ndarray:
    """MIDI notes of hit ``i`` of a part: the chord, a bass note, an arpeggio or a melody."""
    if role == "chord":
        return chord
    if role == "bass":
        return chord[[0 if i % 2 == 0 else rng.integers(len(chord))]] - 12
    if role == "lead" and style.arp:
        return chord[[i % len(chord)]] + 12
    walk[0] = int(np.clip(walk[0] + rng.integers(-2, 3), 0, 2 * len(style.scale) - 1))
    octave, degree = divmod(walk[0], len(style.scale))
    return np.array([walk[1] + 12 * (octave + 1) + style.scale[degree]])


def _part(
    style: Style, part: tuple[str, str], role: str, key: int, bar: float, rng: np.random.Generator
) -> np.ndarray:
    """One tonal part ('chord', 'bass', 'lead' or 'voice') over the clip -> (N,)."""
    inst, rhythm = part
    out = np.zeros(N, F32)
    times = _onsets(style, rhythm, bar, rng)
    walk = [int(rng.integers(len(style.scale))), key]  # melody: scale degree, key
    for i, (t, nxt) in enumerate(zip(times, np.append(times[1:], CLIP_SECONDS), strict=True)):
        shift, quality = style.progression[int(t // bar) % len(style.progression)]
        chord = key + shift + np.array(CHORDS[quality])
        start = int(t * SR)
        n = min(int((nxt - t) * SR * rng.uniform(0.9, 1.1)) + 64, N - start, 6 * SR)
        notes = _pitches(style, role, i, chord, walk, rng)
        if role != "voice":
            sig = _note(inst, notes, n, rng)
        elif style.voice == "rap":  # spoken syllables, falling in pitch
            sig = _vowel(float(_midi(key)) * rng.uniform(0.85, 1.2), n, rng, 0.0, -0.6)
        else:
            sig = _vowel(float(_midi(notes[0] - 12)), n, rng, 0.012, 0.0)
        out[start : start + n] += sig * F32(rng.uniform(0.75, 1.0))
    return out


def _lowpass(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples (first null at SR / width) -> (N,)."""
    if width <= 1:
        return x
    c = np.cumsum(x, dtype=F32)
    c[width:] -= c[:-width].copy()
    return c / F32(width)


def _texture(style: Style, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise under a slow random envelope (harsh: distorted and gated) -> (N,)."""
    noise = rng.standard_normal(N, F32)
    width = round(0.44 * SR / np.exp(rng.uniform(np.log(300), np.log(4000))))  # centre 0.3-4 kHz
    x = _lowpass(noise, max(1, width // 2)) - _lowpass(noise, width)
    points = rng.random(25) ** 2  # the envelope, in 10 ms steps
    coarse = np.interp(np.linspace(0, 24, N // 441 + 1), np.arange(25), points).astype(F32)
    x *= np.repeat(coarse, 441)[:N]
    if style.harsh:
        x = np.tanh(F32(8) * x / x.std()) * np.repeat(rng.random(40) > 0.3, -(-N // 40))[:N]
    return x


def _reverb(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Stereo reverb of a mono signal: three feedback combs, 11 ms apart in the channels."""
    if amount <= 0:
        return np.stack([x, x], axis=1)
    wet = np.zeros(N, F32)
    for delay in rng.integers(1100, 2300, 3):
        y = x.copy()
        for k in range(delay, N, delay):  # y[i] += 0.8 y[i - delay], a delay at a time
            end = min(k + delay, N)
            y[k:end] += F32(0.8) * y[k - delay : end - delay]
        wet += y - x
    wet *= F32(amount / 3)
    return np.stack([x + wet, x + np.roll(wet, 500)], axis=1)


def _render_style(style: Style, rng: np.random.Generator) -> np.ndarray:
    """A clip of ``style`` with random key, tempo, groove and mix -> (N, 2), RMS 0.1."""
    key = 48 + int(rng.integers(-6, 6)) + style.register
    bar = 240.0 / rng.uniform(*style.bpm)
    voice = ("voice", "x.xxx.xx" * 2 if style.voice == "rap" else "x...x.x.x...x...")
    tonal = np.zeros(N, F32)
    parts = {"chord": style.chord, "bass": style.bass, "lead": style.lead}
    for role, part in {**parts, "voice": voice if style.voice else None}.items():
        if part is not None:
            x = _part(style, part, role, key, bar, rng)
            if role == "chord" and style.drive > 1:
                x = np.tanh(F32(style.drive) * x / x.std()) / F32(np.sqrt(style.drive))
            tonal += x * F32(10 ** rng.uniform(-0.2, 0.2) / (x.std() + 1e-6))
    if style.noise:
        texture = _texture(style, rng)
        tonal += texture * F32(style.noise / (texture.std() + 1e-6))
    width = round(0.44 * SR / (style.bright * rng.uniform(0.8, 1.25)))
    mix = _reverb(_lowpass(tonal, width), style.reverb, rng)
    mix /= mix.std() + 1e-6
    kit, centre, side = _drums(rng), np.zeros(N, F32), np.zeros(N, F32)
    for name, rhythm in style.drums:
        hits = np.zeros(N, F32)
        for t in _onsets(style, rhythm, bar, rng):
            if rng.random() > 0.07:  # a few dropped hits
                start = int(t * SR)
                hit = kit[name][: N - start]
                hits[start : start + len(hit)] += hit * F32(rng.uniform(0.7, 1))
        centre += hits * F32(10 ** rng.uniform(-0.2, 0.1))
        if name in ("hat", "ohat", "ride"):  # panned
            side += hits * F32(rng.uniform(-0.4, 0.4))
    mix[:, 0] += centre - side
    mix[:, 1] += centre + side
    return mix * F32(0.1 / (mix.std() + 1e-6))


def render(genres: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A clip of genre ids (one per root; two mix) -> float32 (N, 2) at SR, peak 0.4-0.95."""
    mix = sum(_render_style(STYLES[g], rng) * F32(rng.uniform(0.7, 1.0)) for g in genres)
    return mix * F32(rng.uniform(0.4, 0.95) / np.abs(mix).max())
