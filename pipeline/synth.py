"""Synthetic Speech Commands corpus made with espeak-ng (no download, no TensorFlow).

Reads: nothing (espeak-ng and sox make the audio; --seed decides everything).
Writes: a Speech Commands folder --out_dir (word folders, _background_noise_/, list files,
  README.md, synth_manifest.json); a summary of what was written (--json_out).

    python -m pipeline.synth --out_dir DIR [--words yes,no,...] [--speakers 50] [--seed 0]
                                 [--noise_seconds 45] [--jobs 2] [--overwrite]

writes a directory in the exact layout of the Speech Commands data set:

    DIR/<word>/<speakerid>_nohash_<n>.wav    1 s, 16 kHz, mono, 16-bit PCM (16000 frames)
    DIR/_background_noise_/*.wav             white, pink, brown noise, mains hum, babble
    DIR/_background_noise_/README.md         how the noise was made
    DIR/validation_list.txt                  10 % of speakers, by the data set's hashing rule
    DIR/testing_list.txt                     10 % of speakers, by the data set's hashing rule
    DIR/README.md                            seed, speakers (voice, variant, speed, pitch), counts
    DIR/synth_manifest.json                  the parameters; lets a rerun be a quick no-op

Each synthetic speaker has an 8-hex-digit id derived from the seed (chosen so that the data set's
hashing rule puts exactly 1 speaker in 10 in validation and 1 in 10 in testing, the first three
speakers covering all three sets) and is a fixed espeak-ng voice (an English accent), a variant
(+m1..+m7, +f1..+f5), a speaking rate and a pitch. Every speaker says every word once or twice
(``_nohash_0``, ``_nohash_1``) with a small jitter of rate and pitch per repetition. The
utterance is trimmed of espeak-ng's silence, placed at a random offset inside the second,
peak-normalised to a random level (-20..-1 dBFS) and given a faint noise floor so no clip is
digitally silent.

Every random choice comes from a numpy Generator seeded from (seed, word, speaker, n), so the same
flags give byte-identical files whatever the number of jobs or the order they finish in.

``build_corpus(out_dir, ...)`` is the same thing as a function for tests and other tools.
"""
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import wave
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from absl import logging

from pipeline.splits import which_set

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # exactly one second, like the data set
BACKGROUND_NOISE_DIR = "_background_noise_"
MANIFEST = "synth_manifest.json"
FORMAT_VERSION = 1
VALIDATION_PERCENTAGE = 10.0
TESTING_PERCENTAGE = 10.0

# All 35 words of Speech Commands V2 (the 20 core words, the 10 auxiliary words and the 5 new ones).
DEFAULT_WORDS = (
    "yes no up down left right on off stop go "
    "zero one two three four five six seven eight nine "
    "bed bird cat dog happy house marvin sheila tree wow "
    "backward forward follow learn visual"
).split()
DEFAULT_SPEAKERS = 50
DEFAULT_SEED = 0
DEFAULT_NOISE_SECONDS = 45.0
DEFAULT_JOBS = 2
DEFAULT_MAX_REPETITIONS = 2

# espeak-ng's English voices (language names as `espeak-ng --voices=en` prints them; the
# formant-synthesis ones, no MBROLA). Voices missing from the installed espeak-ng are dropped.
VOICES = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
    "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
SPEED_RANGE = (120, 200)   # words per minute (espeak-ng -s)
PITCH_RANGE = (20, 80)     # espeak-ng -p, 0..99
SPEED_JITTER = 0.08        # +-8 % per repetition
PITCH_JITTER = 6           # +-6 per repetition
LEVEL_DBFS = (-20.0, -1.0)  # peak level of the speech
NOISE_FLOOR_DBFS = (-75.0, -62.0)  # RMS of the faint white noise floor under every clip
NOISE_PEAK_DBFS = -3.0

# Sentences for the babble noise. None of them contains a Speech Commands word (checked when used,
# against the corpus words too), so the noise never says a keyword.
BABBLE_SENTENCES = (
    "The kettle whistled while the bread was toasting in the kitchen.",
    "Please remember to water the plants before the weekend.",
    "A small boat drifted slowly across the quiet lake.",
    "The library closes early during the summer holidays.",
    "She painted the fence a bright shade of blue.",
    "We walked along the beach and collected smooth pebbles.",
    "The train was late because of the heavy snow.",
    "His grandmother baked a cake with fresh strawberries.",
    "The children laughed at the clown in the market square.",
    "A gentle breeze moved the curtains near the window.",
    "The museum has a fine collection of ancient coins.",
    "They planted tomatoes and beans in the garden last spring.",
    "The old clock in the hall chimed at midnight.",
    "Our neighbours adopted a playful kitten from the shelter.",
    "The soup needs a little more salt and pepper.",
    "Bring an umbrella because the clouds look dark.",
    "The orchestra practised the symphony for many weeks.",
    "A lighthouse stands at the edge of the rocky coast.",
    "The farmer sold apples and honey at the fair.",
    "Remember the meeting has moved to the afternoon.",
    "The bakery smells of cinnamon and warm butter.",
    "Bicycles are parked in a long row by the station.",
    "The teacher wrote the answers with a piece of chalk.",
    "Mountains were covered in mist when we arrived.",
)
BABBLE_TALKERS = 6

NOISE_FILES = ("white_noise.wav", "pink_noise.wav", "brown_noise.wav",
               "mains_hum.wav", "babble.wav")

INSTALL_HINT = "run `make setup` (or `sudo apt-get install espeak-ng sox`)"


class SynthError(RuntimeError):
    """A problem the user can fix (missing tool, bad flag, refused output directory)."""


# ----------------------------------------------------------------------------------------------
# Randomness: every generator is seeded from a string naming what it is for.

def _rng(*parts) -> np.random.Generator:
    key = "|".join(str(p) for p in parts).encode("utf-8")
    entropy = int.from_bytes(hashlib.sha256(key).digest()[:16], "little")
    return np.random.default_rng(np.random.SeedSequence(entropy))


def intended_split(i: int) -> str:
    """The set speaker ``i`` is meant to land in: 1 in 10 validation, 1 in 10 testing.

    Pattern over ten speakers: training, validation, testing, then seven training, so even a
    corpus of three or four speakers has all three sets and forty speakers split 32/4/4.
    """
    return {1: "validation", 2: "testing"}.get(i % 10, "training")


def speaker_ids(n: int, seed: int) -> List[str]:
    """The first ``n`` synthetic speaker ids for ``seed`` (8 hex digits, unique).

    Id ``i`` is the first of sha1("synth-speaker|seed|i|attempt")[:8] for attempt = 0, 1, ...
    that the data set's hashing rule (pipeline.splits.which_set, 10 %/10 %) puts in
    ``intended_split(i)``: the list files still come from the rule, but the sets get exactly the
    intended share of speakers instead of the luck of a few dozen hashes.
    """
    ids, seen = [], set()
    for i in range(n):
        attempt = 0
        while True:
            sid = hashlib.sha1(f"synth-speaker|{seed}|{i}|{attempt}".encode()).hexdigest()[:8]
            attempt += 1
            if sid not in seen and which_set(f"{sid}_nohash_0.wav", VALIDATION_PERCENTAGE,
                                             TESTING_PERCENTAGE) == intended_split(i):
                break
        seen.add(sid)
        ids.append(sid)
    return ids


def make_speakers(n: int, seed: int, voices: Sequence[str]) -> List[dict]:
    """Speaker ``i``'s voice depends only on (seed, i): more speakers only add new ones."""
    speakers = []
    for i, sid in enumerate(speaker_ids(n, seed)):
        rng = _rng("speaker", seed, i)
        speakers.append({
            "id": sid,
            "voice": voices[int(rng.integers(len(voices)))],
            "variant": VARIANTS[int(rng.integers(len(VARIANTS)))],
            "speed": int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
            "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        })
    return speakers


def plan_clips(words: Sequence[str], speakers: Sequence[dict], seed: int,
               max_repetitions: int) -> List[dict]:
    """Every clip to make, with its espeak-ng settings (cheap: nothing is synthesised)."""
    clips = []
    for word in words:
        for spk in speakers:
            reps = int(_rng("reps", seed, word, spk["id"]).integers(1, max_repetitions + 1))
            for n in range(reps):
                if n == 0:
                    speed, pitch = spk["speed"], spk["pitch"]
                else:
                    rng = _rng("jitter", seed, word, spk["id"], n)
                    speed = int(round(spk["speed"] * (1 + rng.uniform(-SPEED_JITTER, SPEED_JITTER))))
                    pitch = int(np.clip(spk["pitch"] + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99))
                clips.append({
                    "path": f"{word}/{spk['id']}_nohash_{n}.wav",
                    "word": word, "speaker": spk["id"], "n": n,
                    "voice": f"{spk['voice']}+{spk['variant']}",
                    "speed": speed, "pitch": pitch,
                })
    return clips


# ----------------------------------------------------------------------------------------------
# External tools.

def check_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise SynthError(f"{' and '.join(missing)} not found on PATH: {INSTALL_HINT}.")


def _tool_version(cmd: List[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError as e:  # pragma: no cover - check_tools runs first
        raise SynthError(f"cannot run {cmd[0]}: {e}; {INSTALL_HINT}.") from e
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def available_voices() -> List[str]:
    """VOICES that the installed espeak-ng knows (in VOICES order)."""
    out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, timeout=30)
    known = set()
    for line in out.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            known.add(fields[1].lower())
    voices = [v for v in VOICES if v in known]
    if not voices:
        raise SynthError(f"espeak-ng has none of the English voices {', '.join(VOICES)}: "
                         f"{INSTALL_HINT}.")
    dropped = [v for v in VOICES if v not in known]
    if dropped:
        logging.warning("espeak-ng lacks voices %s; using %s", dropped, voices)
    return voices


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz mono by sox, as float32 in [-1, 1]."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    tts = subprocess.run(cmd, capture_output=True, timeout=300)
    if tts.returncode != 0 or len(tts.stdout) <= 44:
        raise SynthError(f"espeak-ng failed ({' '.join(cmd)}): "
                         f"{tts.stderr.decode(errors='replace').strip()}")
    # Float output: no dither, so sox is deterministic; quantisation happens in numpy.
    sox = subprocess.run(
        ["sox", "-V1", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
         "-r", str(SAMPLE_RATE), "-c", "1", "-"],
        input=tts.stdout, capture_output=True, timeout=300)
    if sox.returncode != 0:
        raise SynthError(f"sox failed resampling espeak-ng output: "
                         f"{sox.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(sox.stdout, dtype="<f4").astype(np.float32)


def trim_silence(x: np.ndarray, threshold_db: float = -40.0, margin: int = 160) -> np.ndarray:
    """The utterance without espeak-ng's leading and trailing silence (10 ms margin kept)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0.0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (threshold_db / 20))
    start = max(int(loud[0]) - margin, 0)
    stop = min(int(loud[-1]) + 1 + margin, x.size)
    return x[start:stop]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


def write_wav(path: str, samples: np.ndarray) -> None:
    """16 kHz mono 16-bit PCM, written to a temporary name then renamed (never half a file)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(to_int16(samples).tobytes())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Clips.

def render_clip(clip: dict, seed: int) -> np.ndarray:
    """One second of float audio for a planned clip (deterministic for (seed, clip))."""
    rng = _rng("clip", seed, clip["word"], clip["speaker"], clip["n"])
    text = clip["word"].replace("_", " ")
    speed = clip["speed"]
    utt = trim_silence(synthesize(text, clip["voice"], speed, clip["pitch"]))
    if utt.size > CLIP_SAMPLES:
        # Too long for a second at this rate: say it faster rather than cut it.
        speed = min(int(np.ceil(speed * utt.size / (0.95 * CLIP_SAMPLES))), 450)
        utt = trim_silence(synthesize(text, clip["voice"], speed, clip["pitch"]))
    if utt.size == 0:
        raise SynthError(f"espeak-ng produced silence for {clip['path']} ({clip['voice']})")
    if utt.size > CLIP_SAMPLES:  # still too long: keep the middle second
        start = (utt.size - CLIP_SAMPLES) // 2
        utt = utt[start:start + CLIP_SAMPLES]
    offset = int(rng.integers(0, CLIP_SAMPLES - utt.size + 1))
    level = rng.uniform(*LEVEL_DBFS)
    floor = rng.uniform(*NOISE_FLOOR_DBFS)
    out = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    out[offset:offset + utt.size] = utt / np.max(np.abs(utt)) * 10 ** (level / 20)
    out += rng.standard_normal(CLIP_SAMPLES) * 10 ** (floor / 20)
    return out


def _make_clip(out_dir: str, clip: dict, seed: int) -> str:
    write_wav(os.path.join(out_dir, clip["path"]), render_clip(clip, seed))
    return clip["path"]


# ----------------------------------------------------------------------------------------------
# Background noise.

def _peak_normalise(x: np.ndarray, dbfs: float = NOISE_PEAK_DBFS) -> np.ndarray:
    return x / max(float(np.max(np.abs(x))), 1e-12) * 10 ** (dbfs / 20)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    white = rng.standard_normal(n)
    if exponent == 0:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    freqs[0] = 1.0
    scale = 1.0 / np.maximum(freqs, 20.0) ** (exponent / 2)  # flat below 20 Hz: no huge drift
    scale[0] = 0.0  # no DC
    return np.fft.irfft(spectrum * scale, n)


def mains_hum(n: int, rng: np.random.Generator, f0: float = 50.0) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    for k in range(1, 16):
        amp = (1.0 / k) * (1.6 if k % 2 else 0.6)  # odd harmonics stronger, like a transformer buzz
        x += amp * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
    wobble = 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    x *= wobble
    x += colored_noise(n, 1.0, rng) * 0.02 * np.std(x) / 1.0
    return x


def babble_sentences(exclude_words: Iterable[str]) -> List[str]:
    banned = {w.lower() for w in exclude_words} | set(DEFAULT_WORDS)
    keep = [s for s in BABBLE_SENTENCES
            if not banned & set(re.findall(r"[a-z']+", s.lower()))]
    return keep or ["The weather was mild and the streets were busy."]


def babble(n: int, rng: np.random.Generator, voices: Sequence[str],
           words: Sequence[str]) -> np.ndarray:
    """Several espeak-ng talkers reading sentences at once (no keyword is ever said)."""
    sentences = babble_sentences(words)
    mix = np.zeros(n)
    for _ in range(BABBLE_TALKERS):
        order = rng.permutation(len(sentences))
        text = " ".join(sentences[i] for i in order)
        voice = f"{voices[int(rng.integers(len(voices)))]}+{VARIANTS[int(rng.integers(len(VARIANTS)))]}"
        speech = synthesize(text, voice, int(rng.integers(140, 191)), int(rng.integers(20, 81)))
        if speech.size == 0:
            continue
        speech = np.tile(speech, int(np.ceil(n / speech.size)) + 1)
        start = int(rng.integers(0, speech.size - n + 1))
        talker = speech[start:start + n].astype(np.float64)
        talker /= max(float(np.std(talker)), 1e-9)
        mix += talker * 10 ** (rng.uniform(-6.0, 0.0) / 20)
    return mix


NOISE_README = """# Background noise (synthetic)

Made by `python -m pipeline.synth` (seed {seed}), {seconds:g} s each, 16 kHz mono 16-bit PCM,
peak-normalised to {peak:g} dBFS. Each file comes from its own numpy Generator seeded from
(seed, file name), so it is reproducible.

| file | how it was made |
|---|---|
| white_noise.wav | Gaussian white noise (flat spectrum). |
| pink_noise.wav | white noise shaped in the FFT domain to a 1/f power spectrum (flat below 20 Hz, no DC). |
| brown_noise.wav | the same with a 1/f^2 power spectrum (a rumble). |
| mains_hum.wav | 50 Hz mains hum: harmonics 1..15 with amplitude 1/k (odd ones stronger), random phases, slow 10 % amplitude wobble, faint pink noise. |
| babble.wav | {talkers} espeak-ng talkers (random English voices, variants, rates and pitches) each reading the same {n_sentences} everyday sentences in a random order, looped, cut at a random point, scaled to equal RMS, given a random gain of -6..0 dB and summed. No sentence contains a keyword of the corpus. |

Use them like the data set's own `_background_noise_`: random one-second windows mixed under the
clips at a random volume, and as the source of the "silence" class.
"""


def make_noise(noise_dir: str, seed: int, seconds: float, voices: Sequence[str],
               words: Sequence[str]) -> List[str]:
    os.makedirs(noise_dir, exist_ok=True)
    n = int(round(seconds * SAMPLE_RATE))
    makers = {
        "white_noise.wav": lambda rng: colored_noise(n, 0.0, rng),
        "pink_noise.wav": lambda rng: colored_noise(n, 1.0, rng),
        "brown_noise.wav": lambda rng: colored_noise(n, 2.0, rng),
        "mains_hum.wav": lambda rng: mains_hum(n, rng),
        "babble.wav": lambda rng: babble(n, rng, voices, words),
    }
    for name in NOISE_FILES:
        write_wav(os.path.join(noise_dir, name), _peak_normalise(makers[name](_rng("noise", seed, name))))
    with open(os.path.join(noise_dir, "README.md"), "w") as f:
        f.write(NOISE_README.format(seed=seed, seconds=seconds, peak=NOISE_PEAK_DBFS,
                                    talkers=BABBLE_TALKERS,
                                    n_sentences=len(babble_sentences(words))))
    return [f"{BACKGROUND_NOISE_DIR}/{name}" for name in NOISE_FILES]


# ----------------------------------------------------------------------------------------------
# Output directory handling.

def _read_manifest(out_dir: str) -> Optional[dict]:
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("generator") == "pipeline.synth" else None


def _write_manifest(out_dir: str, manifest: dict) -> None:
    tmp = os.path.join(out_dir, f".{MANIFEST}.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, MANIFEST))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _refuse_dangerous(out_dir: str) -> None:
    real = os.path.realpath(out_dir)
    danger = {os.path.realpath(p) for p in ("/", os.path.expanduser("~"), os.getcwd(),
                                            os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    if real in danger:
        raise SynthError(f"refusing to clear {out_dir}: pick a dedicated output directory.")


def _remove_previous_corpus(out_dir: str, manifest: dict, words: Sequence[str]) -> None:
    """Delete what a previous synth run wrote (its word folders, noise, lists, README, manifest)."""
    owned = set(manifest.get("params", {}).get("words", [])) | set(words)
    owned |= {BACKGROUND_NOISE_DIR, "validation_list.txt", "testing_list.txt", "README.md", MANIFEST}
    for name in owned:
        if "/" not in name and name not in ("", ".", ".."):
            _remove(os.path.join(out_dir, name))


def _validate_words(words: Sequence[str]) -> List[str]:
    out = []
    for w in words:
        w = w.strip()
        if not w:
            continue
        if not re.fullmatch(r"[a-z][a-z0-9_']*", w):
            raise SynthError(f"bad word {w!r}: use lower-case letters, digits, ' and _ "
                             "(a folder name; _ is read as a space), starting with a letter.")
        if w not in out:
            out.append(w)
    if not out:
        raise SynthError("no words given.")
    return out


# ----------------------------------------------------------------------------------------------
# README.

def _corpus_readme(params: dict, speakers: List[dict], per_word: Dict[str, int],
                   per_split: Dict[str, int], speaker_split: Dict[str, str],
                   tools: Dict[str, str], noise_files: List[str]) -> str:
    lines = [
        "# Synthetic Speech Commands corpus (espeak-ng)",
        "",
        "Made by `python -m pipeline.synth` in the layout of Google's Speech Commands data set:",
        "`<word>/<speakerid>_nohash_<n>.wav` (1 s, 16 kHz, mono, 16-bit PCM), `_background_noise_/`,",
        "`validation_list.txt` and `testing_list.txt` (the data set's hashing rule on the speaker id,",
        f"{VALIDATION_PERCENTAGE:g} % / {TESTING_PERCENTAGE:g} %, unsalted; every other clip is training).",
        "Speaker ids are 8 hex digits derived from the seed, picked so that the rule sends exactly",
        "one speaker in ten to validation and one in ten to testing.",
        "",
        "Regenerate byte for byte with:",
        "",
        "    python -m pipeline.synth --out_dir DIR --seed {seed} --speakers {speakers} "
        "--noise_seconds {noise_seconds:g} --max_repetitions {max_repetitions} \\".format(**params),
        "        --words " + ",".join(params["words"]),
        "",
        f"Tools: {tools['espeak-ng']}; {tools['sox']}.",
        "",
        "## How a clip is made",
        "",
        "espeak-ng says the word with the speaker's voice, variant, rate (-s) and pitch (-p); the",
        f"second repetition jitters rate by up to +-{SPEED_JITTER * 100:g} % and pitch by up to "
        f"+-{PITCH_JITTER}. sox resamples",
        "22.05 kHz to 16 kHz; the silence around the word is trimmed, the word is placed at a random",
        "offset inside the second (said faster if it would not fit), peak-normalised to a random level",
        f"in {LEVEL_DBFS[0]:g}..{LEVEL_DBFS[1]:g} dBFS and given a white noise floor at "
        f"{NOISE_FLOOR_DBFS[0]:g}..{NOISE_FLOOR_DBFS[1]:g} dBFS RMS.",
        "",
        "## Counts",
        "",
        f"{sum(per_word.values())} clips, {len(speakers)} speakers, {len(per_word)} words; "
        + ", ".join(f"{k} {per_split[k]}" for k in ("training", "validation", "testing")) + " clips.",
        "",
        "| word | clips |",
        "|---|---|",
    ]
    lines += [f"| {w} | {c} |" for w, c in per_word.items()]
    lines += ["", "## Speakers", "", "| id | voice | rate (wpm) | pitch | set |", "|---|---|---|---|---|"]
    lines += [f"| {s['id']} | {s['voice']}+{s['variant']} | {s['speed']} | {s['pitch']} | "
              f"{speaker_split[s['id']]} |" for s in speakers]
    lines += ["", "## Background noise", "", "See `_background_noise_/README.md`: "
              + ", ".join(os.path.basename(p) for p in noise_files) + ".", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The corpus.

def build_corpus(out_dir: str,
                 words: Sequence[str] = DEFAULT_WORDS,
                 speakers: int = DEFAULT_SPEAKERS,
                 seed: int = DEFAULT_SEED,
                 noise_seconds: float = DEFAULT_NOISE_SECONDS,
                 jobs: int = DEFAULT_JOBS,
                 max_repetitions: int = DEFAULT_MAX_REPETITIONS,
                 overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Write (or confirm) a synthetic Speech Commands corpus in ``out_dir``; return a summary.

    The summary has ``out_dir``, ``clips`` (count), ``per_word``, ``per_split`` (clip counts),
    ``speakers`` (list of dicts), ``files`` (relative clip paths), ``noise_files``, ``skipped``
    (True when an identical complete corpus was already there) and ``seconds``.
    """
    t0 = time.time()
    words = _validate_words(list(words))
    if speakers < 1:
        raise SynthError("--speakers must be at least 1.")
    if jobs < 1:
        raise SynthError("--jobs must be at least 1.")
    if max_repetitions < 1:
        raise SynthError("--max_repetitions must be at least 1.")
    if not noise_seconds >= 1.0:
        raise SynthError("--noise_seconds must be at least 1.")
    check_tools()
    tools = {"espeak-ng": re.sub(r"\s+Data at:.*", "", _tool_version(["espeak-ng", "--version"])),
             "sox": _tool_version(["sox", "--version"]).replace("sox:", "").strip()}
    voices = available_voices()
    params = {"words": words, "speakers": int(speakers), "seed": int(seed),
              "noise_seconds": float(noise_seconds), "max_repetitions": int(max_repetitions),
              "voices": voices, "format_version": FORMAT_VERSION,
              "validation_percentage": VALIDATION_PERCENTAGE,
              "testing_percentage": TESTING_PERCENTAGE,
              "espeak-ng": tools["espeak-ng"], "sox": tools["sox"]}

    spk = make_speakers(speakers, seed, voices)
    clips = plan_clips(words, spk, seed, max_repetitions)
    paths = [c["path"] for c in clips]
    noise_files = [f"{BACKGROUND_NOISE_DIR}/{n}" for n in NOISE_FILES]
    speaker_split = {s["id"]: which_set(s["id"] + "_nohash_0.wav", VALIDATION_PERCENTAGE,
                                        TESTING_PERCENTAGE) for s in spk}
    splits = {p: which_set(p, VALIDATION_PERCENTAGE, TESTING_PERCENTAGE) for p in paths}
    per_word = dict(Counter(c["word"] for c in clips))
    per_split = {k: sum(1 for v in splits.values() if v == k)
                 for k in ("training", "validation", "testing")}
    summary = {"out_dir": out_dir, "clips": len(clips), "per_word": per_word,
               "per_split": per_split, "speakers": spk, "files": paths,
               "noise_files": noise_files, "skipped": False}

    # What is in out_dir already?
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SynthError(f"--out_dir {out_dir} exists and is not a directory.")
    os.makedirs(out_dir, exist_ok=True)
    previous = _read_manifest(out_dir)
    resume = False
    if previous is not None:
        if previous.get("params") == params and not overwrite:
            if previous.get("complete") and all(
                    os.path.isfile(os.path.join(out_dir, p)) for p in paths + noise_files):
                logging.info("%s already holds this corpus (%d clips): nothing to do.",
                             out_dir, len(clips))
                summary.update(skipped=True, seconds=time.time() - t0)
                return summary
            resume = True  # same flags, interrupted (or files deleted): make what is missing
            logging.info("Resuming the unfinished corpus in %s.", out_dir)
        else:
            logging.info("Replacing the previous synthetic corpus in %s (%s).", out_dir,
                         "--overwrite" if previous.get("params") == params else "different flags")
            _remove_previous_corpus(out_dir, previous, words)
    elif os.listdir(out_dir):
        if not overwrite:
            raise SynthError(
                f"--out_dir {out_dir} is not empty and is not a corpus made by pipeline.synth "
                f"(no {MANIFEST}); refusing to write into it. Pick an empty or new directory, "
                "or pass --overwrite to delete its contents.")
        _refuse_dangerous(out_dir)
        logging.warning("--overwrite: deleting the contents of %s.", out_dir)
        for name in os.listdir(out_dir):
            _remove(os.path.join(out_dir, name))

    _write_manifest(out_dir, {"generator": "pipeline.synth", "complete": False, "params": params})
    for w in words:
        os.makedirs(os.path.join(out_dir, w), exist_ok=True)
        for name in os.listdir(os.path.join(out_dir, w)):  # leftovers of an interrupted write
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(out_dir, w, name))

    todo = [c for c in clips
            if not (resume and os.path.isfile(os.path.join(out_dir, c["path"])))]
    logging.info("Synthesising %d clips (%d words x %d speakers) with %d job(s) into %s",
                 len(todo), len(words), speakers, jobs, out_dir)
    # Threads are enough: the work is in the espeak-ng and sox subprocesses.
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_make_clip, out_dir, c, seed) for c in todo]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(futures), unit="clip", desc="synth")
        try:
            for fut in concurrent.futures.as_completed(futures):
                fut.result()
                if bar is not None:
                    bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()

    noise_dir = os.path.join(out_dir, BACKGROUND_NOISE_DIR)
    if not (resume and all(os.path.isfile(os.path.join(out_dir, p)) for p in noise_files)):
        logging.info("Making %g s background noise files", noise_seconds)
        make_noise(noise_dir, seed, noise_seconds, voices, words)

    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        with open(os.path.join(out_dir, name), "w") as f:
            f.writelines(f"{p}\n" for p in sorted(p for p in paths if splits[p] == split))
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(_corpus_readme(params, spk, per_word, per_split, speaker_split, tools, noise_files))
    _write_manifest(out_dir, {"generator": "pipeline.synth", "complete": True, "params": params,
                              "clips": len(clips), "per_word": per_word, "per_split": per_split})
    summary["seconds"] = time.time() - t0
    logging.info("Wrote %d clips (%s) and %d noise files to %s in %.1f s", len(clips),
                 ", ".join(f"{k} {v}" for k, v in per_split.items()), len(noise_files),
                 out_dir, summary["seconds"])
    return summary


# ----------------------------------------------------------------------------------------------
# Command line.

def define_flags():
    from absl import flags

    from pipeline import cli_vocabulary
    flags.DEFINE_string("out_dir", None, "Output directory (created; must be new, empty, or a "
                        "previous pipeline.synth corpus).")
    flags.DEFINE_list("words", DEFAULT_WORDS, "Comma-separated words (default: the 35 Speech "
                      "Commands V2 words).")
    flags.DEFINE_integer("speakers", DEFAULT_SPEAKERS, "Number of synthetic speakers.")
    flags.DEFINE_integer("seed", DEFAULT_SEED, "Seed: the same flags give byte-identical files.")
    flags.DEFINE_float("noise_seconds", DEFAULT_NOISE_SECONDS,
                       "Length of each _background_noise_ file in seconds.")
    flags.DEFINE_integer("jobs", DEFAULT_JOBS, "Parallel espeak-ng/sox pipelines.")
    flags.DEFINE_integer("max_repetitions", DEFAULT_MAX_REPETITIONS,
                         "Each speaker says each word 1..this many times.")
    flags.DEFINE_bool("overwrite", False, "Delete the contents of a non-empty --out_dir that is "
                      "not a pipeline.synth corpus, or rebuild an identical one.")
    flags.mark_flag_as_required("out_dir")
    cli_vocabulary.define_aliases("pipeline.synth")  # --out (old name of --out_dir)


def main(argv):
    from absl import app, flags
    from pipeline import output_paths
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    output_paths.check_dir(f.out_dir, "--out_dir")
    summary = build_corpus(f.out_dir, words=f.words, speakers=f.speakers, seed=f.seed,
                           noise_seconds=f.noise_seconds, jobs=f.jobs,
                           max_repetitions=f.max_repetitions, overwrite=f.overwrite)
    print(f"{summary['out_dir']}: {summary['clips']} clips, "
          + ", ".join(f"{k} {v}" for k, v in summary["per_split"].items())
          + (" (already up to date)" if summary["skipped"] else f" in {summary['seconds']:.1f} s"))
    return summary  # --json_out


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(SynthError,))
