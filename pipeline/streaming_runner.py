"""Running a streaming model one hop at a time: Keras (``models.streaming.StreamingDFSMN``) and
.tflite files written by ``pipeline.export --streaming`` (state tensors in and out).

Geometry (``StreamGeometry``, from the feature configuration: 512-sample frame hop, 2048-sample
FFT frames, 1 s windows of 32 frames): one hop is 4 feature frames = 2048 samples = 128 ms of
audio, and gives the logits of the 1 s window that ends with it.

* **Features of a stream** (``stream_features``): frame k holds the 2048 samples that END at
  sample 512 (k + 1); the samples before the stream's start are zeros (the streaming log-mel's
  initial state). The 4 frames of hop h end at 2048 h + 512, ..., 2048 (h + 1).
* **Audio input**: the model keeps the last 2048 - 512 = 1536 samples as its first state
  (``log_mel_step``: the 4 frames of a hop need 1536 samples before it).
* **A 1 s clip** (``clip_hops``), to compare with the windowed pipeline: its 32 centred
  features (``pipeline.features.log_mel``: reflect padding of 1024 samples on both sides) are
  the frames of the reflect-padded clip; fed as 8 hops of 4 frames from zero state, or as 8 hops
  of 2048 samples of the padded clip with the audio state set to its first 1536 samples, the
  last hop's logits are the windowed model's on that clip (``run_clips``; what evaluation and
  the export's verification use, through ``pipeline.predictors``).

A .tflite streaming model (``TFLiteStreamingRunner``): input 0 the hop (``features`` [1, 4,
32] or ``audio`` [1, 2048]), inputs 1.. the states; output 0 the logits [1, classes], output
k + 1 the new value of state k (same shape), which the caller feeds back as input k + 1 at the
next invoke; every state starts at zero. The file's ``bkws.description`` metadata carries a
``streaming`` entry (``streaming_description``) naming the states, their shapes and the hop.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import List, Optional, Sequence

import numpy as np

from pipeline.checkpoints import CheckpointError

#: the key of the description entry that marks a streaming model
KEY = "streaming"
FORMAT = "bkws.streaming/1"


class StreamingModelError(CheckpointError):
    """A streaming model that does not have the inputs / outputs its description promises
    (a ``checkpoints.CheckpointError``: the tools print one line and exit with status 2)."""


@dataclasses.dataclass(frozen=True)
class StreamGeometry:
    """Hop arithmetic of a streaming model on features of configuration ``cfg``."""
    hop_frames: int = 4
    frame_hop: int = 512          # samples between feature frames
    n_fft: int = 2048             # samples per feature frame
    window_frames: int = 32       # frames of the 1 s window (training)
    sample_rate: int = 16000

    @classmethod
    def from_config(cls, cfg=None, hop_frames: int = 4):
        from pipeline.features import DEFAULT
        cfg = cfg or DEFAULT
        return cls(hop_frames, cfg.hop, cfg.n_fft, cfg.num_frames, cfg.sample_rate)

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.frame_hop

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_samples / self.sample_rate

    @property
    def audio_state(self) -> int:
        """Samples before a hop that its frames need."""
        return self.n_fft - self.frame_hop

    @property
    def window_hops(self) -> int:
        return self.window_frames // self.hop_frames


# -- features ----------------------------------------------------------------------------------
def log_mel_frames(audio, cfg=None):
    """log-mel of every 2048-sample frame of ``audio`` [..., n] at a 512-sample hop, NO padding:
    ``pipeline.features.log_mel`` without its reflect padding (the same ops: periodic Hann,
    normalised power, HTK mel matrix, dB), [..., 1 + (n - n_fft) // hop, mels]."""
    import tensorflow as tf

    from pipeline.features import DEFAULT, mel_matrix
    cfg = cfg or DEFAULT
    audio = tf.convert_to_tensor(audio, tf.float32)
    window = tf.signal.hann_window(cfg.n_fft, periodic=True)
    spec = tf.signal.stft(audio, frame_length=cfg.n_fft, frame_step=cfg.hop,
                          fft_length=cfg.n_fft, window_fn=lambda n, dtype: window, pad_end=False)
    power = tf.square(tf.abs(spec)) / tf.reduce_sum(tf.square(window))
    mel = tf.tensordot(power, mel_matrix(cfg), axes=1)
    return 10.0 * tf.math.log(tf.maximum(mel, cfg.amin)) / tf.math.log(10.0)


def log_mel_step(audio_state, hop, cfg=None):
    """The streaming front end: (state [B, 1536], hop [B, 2048]) -> (frames [B, 4, mels], new
    state [B, 1536]): the frames that end in this hop."""
    import tensorflow as tf
    buf = tf.concat([audio_state, hop], axis=-1)
    keep = audio_state.shape[-1]
    return log_mel_frames(buf, cfg), buf[..., -keep:]


def stream_features(audio, geometry: StreamGeometry = None, cfg=None, chunk_frames=4096):
    """Features of a whole stream as the streaming model sees them: frame k ends at sample
    512 (k + 1) (zeros before the stream); [len(audio) // 512, mels] float32. Computed in
    chunks (each frame depends on its own 2048 samples only)."""
    g = geometry or StreamGeometry.from_config(cfg)
    audio = np.asarray(audio, np.float32)
    n = len(audio) // g.frame_hop
    padded = np.concatenate([np.zeros(g.audio_state, np.float32), audio[:n * g.frame_hop]])
    out = []
    for k in range(0, n, chunk_frames):
        k2 = min(k + chunk_frames, n)
        seg = padded[k * g.frame_hop:(k2 - 1) * g.frame_hop + g.n_fft]
        out.append(log_mel_frames(seg, cfg).numpy())
    return np.concatenate(out) if out else np.zeros((0, 32), np.float32)


def clip_hops(x, kind: str, geometry: StreamGeometry = None):
    """One 1 s window -> (initial audio state or None, [hop inputs]): features [32, mels] -> 8
    chunks [4, mels]; audio [16000] -> the reflect-padded clip's first 1536 samples and 8 hops
    of 2048 (module docstring)."""
    g = geometry or StreamGeometry()
    x = np.asarray(x, np.float32)
    if kind == "features":
        if x.shape[0] % g.hop_frames:
            raise StreamingModelError(f"{x.shape[0]} feature frames: not a multiple of the "
                                      f"hop ({g.hop_frames} frames)")
        return None, [x[i:i + g.hop_frames] for i in range(0, x.shape[0], g.hop_frames)]
    pad = g.n_fft // 2
    padded = np.pad(x, (pad, pad), mode="reflect")
    hops = (len(padded) - g.audio_state) // g.hop_samples   # 8 for a 1 s clip
    s0 = g.audio_state
    return padded[:s0], [padded[s0 + h * g.hop_samples:s0 + (h + 1) * g.hop_samples]
                         for h in range(hops)]


# -- the description entry ---------------------------------------------------------------------
def streaming_description(state_specs, input_kind, geometry: StreamGeometry) -> dict:
    """The ``streaming`` entry of a streaming .tflite's description."""
    states = [{"name": n, "shape": [1] + [int(v) for v in shape]} for n, shape in state_specs]
    return {"format": FORMAT, "hop_frames": geometry.hop_frames,
            "hop_samples": geometry.hop_samples, "hop_ms": geometry.hop_ms,
            "window_hops": geometry.window_hops,
            "input": ([1, geometry.hop_frames, None] if input_kind == "features"
                      else [1, geometry.hop_samples]),
            "states": states, "initial_state": "zeros",
            "io": "input 0: the hop; input k + 1: state k; output 0: logits; output k + 1: "
                  "the new value of state k (feed it back as input k + 1)"}


def is_streaming(description: Optional[dict]) -> bool:
    return bool(description) and isinstance(description.get(KEY), dict)


def check_description(description: dict, where: str) -> dict:
    """The ``streaming`` entry of ``description`` if it is well formed (``streaming_description``'s
    fields, consistent with the features), else StreamingModelError naming ``where``."""
    entry = description.get(KEY)

    def bad(what):
        return StreamingModelError(f"{where}: its {KEY} description {what}; expected the entry "
                                   "pipeline.export --streaming writes "
                                   "(pipeline/streaming_runner.py)")

    if not isinstance(entry, dict):
        raise bad(f"is a {type(entry).__name__}, not an object")
    if entry.get("format") != FORMAT:
        raise bad(f"has format {str(entry.get('format'))[:40]!r} (not {FORMAT!r})")
    ints = {k: entry.get(k) for k in ("hop_frames", "hop_samples", "window_hops")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 20
               for v in ints.values()):
        raise bad(f"has {ints} (not positive integers)")
    hop = description["features"]["hop"]
    if ints["hop_samples"] != ints["hop_frames"] * hop:
        raise bad(f"has hop_samples {ints['hop_samples']} != hop_frames {ints['hop_frames']} x "
                  f"the features' hop {hop}")
    states = entry.get("states")
    if not isinstance(states, list) or not states or len(states) > 256:
        raise bad("lists no states")
    for st in states:
        shape = st.get("shape") if isinstance(st, dict) else None
        if not (isinstance(st, dict) and isinstance(st.get("name"), str) and
                isinstance(shape, list) and 2 <= len(shape) <= 5 and shape[0] == 1 and
                all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 20
                    for v in shape)):
            raise bad(f"has a state {str(st)[:80]} (expected a name and a shape [1, ...])")
    return entry


# -- runners -----------------------------------------------------------------------------------
class StreamingRunner:
    """Common part: ``reset()``, ``step(x) -> logits [classes]`` (x: one hop without the batch
    axis), ``run_clips(batch)`` (1 s windows, each from reset), ``invokes`` (model calls)."""

    input_kind = "features"
    runtime = "?"

    def __init__(self, geometry: StreamGeometry):
        self.geometry = geometry
        self.invokes = 0
        self.states: List[np.ndarray] = []

    @property
    def state_specs(self):
        raise NotImplementedError

    def reset(self, audio_state=None):
        """Zero state (the empty stream); ``audio_state``: the audio model's first state."""
        self.states = [np.zeros((1,) + tuple(shape), np.float32) for _, shape in self.state_specs]
        if audio_state is not None:
            if self.input_kind != "audio":
                raise StreamingModelError("an audio state for a features-input model")
            self.states[0] = np.asarray(audio_state, np.float32).reshape(self.states[0].shape)

    def step(self, x) -> np.ndarray:
        try:
            logits, self.states = self._invoke(np.asarray(x, np.float32)[None], self.states)
        except (RuntimeError, ValueError) as e:   # the runtime refused the input or the model
            from pipeline import predictors
            if predictors._ours(e):  # noqa: SLF001
                raise
            raise predictors._refused(getattr(self, "path", "the model"), e) from e  # noqa: SLF001
        self.invokes += 1
        return logits[0]

    def run_clips(self, batch) -> np.ndarray:
        """Logits of each 1 s window of ``batch`` ([B, 32, mels] or [B, 16000]), each fed hop
        by hop from reset (``clip_hops``)."""
        out = []
        for x in np.asarray(batch, np.float32):
            s0, hops = clip_hops(x, self.input_kind, self.geometry)
            self.reset(s0)
            for h in hops:
                y = self.step(h)
            out.append(y)
        return np.stack(out)

    def _invoke(self, x, states):
        raise NotImplementedError


class KerasStreamingRunner(StreamingRunner):
    """A Keras streaming model (``StreamingDFSMN`` of a ``build_dfsmn_stream`` model at one
    depth), features input; ``compiled``: one tf.function (fast per hop after a slow trace)."""

    runtime = "keras"

    def __init__(self, model, compiled: bool = True, geometry: StreamGeometry = None):
        import tensorflow as tf

        from models.streaming import StreamingDFSMN
        super().__init__(geometry or StreamGeometry())
        self.stream = StreamingDFSMN(model)
        self.mels = int(self.stream.mels)
        fn = self.stream.step
        if compiled:
            specs = [tf.TensorSpec((1, self.geometry.hop_frames, self.mels), tf.float32)] + [
                tf.TensorSpec((1,) + tuple(s), tf.float32) for _, s in self.stream.state_specs]
            fn = tf.function(lambda x, *st: self.stream.step(x, list(st)),
                             input_signature=specs, autograph=False)
            self._fn = lambda x, st: fn(x, *st)
        else:
            self._fn = fn
        self.reset()

    @property
    def state_specs(self):
        return self.stream.state_specs

    def _invoke(self, x, states):
        logits, new = self._fn(x, states)
        return logits.numpy(), [s.numpy() for s in new]


class TFLiteStreamingRunner(StreamingRunner):
    """A streaming .tflite (module docstring), on the LCE interpreter (models with LCE ops)
    or TensorFlow's (XNNPACK)."""

    def __init__(self, path, description: dict, model_bytes: bytes = None, num_threads=1,
                 runtime="auto"):
        from pipeline import predictors
        desc = check_description(description, path)
        super().__init__(StreamGeometry(
            hop_frames=int(desc["hop_frames"]),
            frame_hop=int(description["features"]["hop"]),
            n_fft=int(description["features"]["n_fft"]),
            window_frames=int(desc["hop_frames"]) * int(desc["window_hops"]),
            sample_rate=int(description["features"]["sample_rate"])))
        self.path = path
        self.input_kind = description["input"]
        if model_bytes is None:
            with open(path, "rb") as f:
                model_bytes = f.read()
        self._specs = [(s["name"], tuple(int(v) for v in s["shape"][1:])) for s in desc["states"]]
        if runtime == "auto":
            runtime = predictors.default_runtime(model_bytes)
        self.runtime = runtime
        try:
            if runtime == "lce":
                from larq_compute_engine.tflite.python.interpreter import Interpreter
                self._lce = Interpreter(model_bytes, num_threads=num_threads).interpreter
                in_shapes = [tuple(s) for s in self._lce.input_shapes]
                out_shapes = [tuple(s) for s in self._lce.output_shapes]
            else:
                import tensorflow as tf
                from models.lce_census import has_own_ops
                if has_own_ops(model_bytes):  # the project's ops (and LCE's): its registerer
                    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
                    from lce_kernels import ops
                    self._tf = InterpreterWithCustomOps(
                        model_content=model_bytes, num_threads=num_threads,
                        custom_op_registerers=ops.registerers())
                    self.runtime = "tf+custom_ops"
                else:
                    self._tf = tf.lite.Interpreter(model_content=model_bytes,
                                                   num_threads=num_threads)
                self._tf.allocate_tensors()
                self._in = [d["index"] for d in self._tf.get_input_details()]
                self._out = [d["index"] for d in self._tf.get_output_details()]
                in_shapes = [tuple(d["shape"]) for d in self._tf.get_input_details()]
                out_shapes = [tuple(d["shape"]) for d in self._tf.get_output_details()]
        except (RuntimeError, ValueError) as e:
            if predictors._ours(e):  # noqa: SLF001
                raise
            raise predictors._refused(path, e) from e  # noqa: SLF001
        self.input_shapes, self.output_shapes = in_shapes, out_shapes
        self._check(in_shapes, out_shapes, len(description["labels"]))
        self.reset()

    def _check(self, ins, outs, n_labels):
        g = self.geometry
        hop = (1, g.hop_frames) if self.input_kind == "features" else (1, g.hop_samples)
        states = [(1,) + s for _, s in self._specs]
        problems = []
        if len(ins) != 1 + len(states) or len(outs) != 1 + len(states):
            problems.append(f"{len(ins)} inputs and {len(outs)} outputs for {len(states)} "
                            "states (expected 1 + states each)")
        else:
            if tuple(ins[0][:2]) != hop:
                problems.append(f"input 0 has shape {list(ins[0])}, expected {list(hop)}...")
            if tuple(outs[0]) != (1, n_labels):
                problems.append(f"output 0 has shape {list(outs[0])}, expected [1, {n_labels}]")
            for k, s in enumerate(states):
                if tuple(ins[k + 1]) != s or tuple(outs[k + 1]) != s:
                    problems.append(f"state {self._specs[k][0]}: input {list(ins[k + 1])} / "
                                    f"output {list(outs[k + 1])}, expected {list(s)}")
        if problems:
            raise StreamingModelError(
                f"{self.path}: {'; '.join(problems)}; expected the streaming model "
                "pipeline.export --streaming writes (its description's streaming entry)")

    @property
    def state_specs(self):
        return self._specs

    def _invoke(self, x, states):
        if self.runtime == "lce":
            out = self._lce.predict([x] + states)
            return out[0], list(out[1:])
        it = self._tf
        for i, v in zip(self._in, [x] + states):
            it.set_tensor(i, v)
        it.invoke()
        out = [it.get_tensor(i) for i in self._out]
        return out[0], out[1:]


def tflite_predictor(path, description, model_bytes, num_threads=1):
    """A ``pipeline.predictors.Predictor`` of a streaming .tflite: ``predict`` takes 1 s windows
    ([B, 32, mels] or [B, 16000], what the windowed models take) and runs each hop by hop from
    reset; ``predictor.streaming`` is the runner (hop by hop, for firmware_sim.stream)."""
    from pipeline import predictors
    runner = TFLiteStreamingRunner(path, description, model_bytes, num_threads)
    pred = predictors.Predictor(os.path.basename(path), description["labels"],
                                description["input"], runner.run_clips, runner.runtime,
                                description)
    pred.streaming = runner
    pred.arch, pred.depth = description.get("arch"), description.get("depth")
    return pred


def keras_predictor(model, labels, arch=None, depth=None, compiled=True):
    """The hop-by-hop runner of a streaming checkpoint (a single-depth ``build_dfsmn_stream``
    model) as a Predictor (features input; ``predict`` runs 1 s windows from reset)."""
    runner = KerasStreamingRunner(model, compiled)
    from pipeline import predictors
    pred = predictors.Predictor(model.name, list(labels), "features", runner.run_clips,
                                "keras", None)
    pred.streaming = runner
    pred.arch, pred.depth = arch, depth
    return pred


def run_stream(runner: StreamingRunner, audio, progress: bool = False,
               features: Optional[np.ndarray] = None):
    """Run ``audio`` (a 16 kHz stream) through ``runner`` hop by hop from reset: (hop end
    times in ms [H], logits [H, classes]). Features-input runners get ``stream_features``
    (computed once for the whole stream; each frame depends only on its own past audio)."""
    from tqdm import tqdm
    g = runner.geometry
    audio = np.asarray(audio, np.float32)
    hops = len(audio) // g.hop_samples
    runner.reset()
    if runner.input_kind == "features":
        feats = stream_features(audio[:hops * g.hop_samples], g) if features is None else features
    out = []
    for h in tqdm(range(hops), desc="stream", unit="hop", disable=not progress,
                  file=sys.stderr, mininterval=1.0):
        if runner.input_kind == "features":
            x = feats[h * g.hop_frames:(h + 1) * g.hop_frames]
        else:
            x = audio[h * g.hop_samples:(h + 1) * g.hop_samples]
        out.append(runner.step(x))
    times = (np.arange(hops) + 1) * g.hop_ms
    return times, np.stack(out) if out else np.zeros((0, 0), np.float32)


def states_summary(specs: Sequence) -> dict:
    """Bytes of state per stream (float32), for reports."""
    return {"states": len(specs), "floats": int(sum(int(np.prod(s)) for _, s in specs)),
            "bytes": int(4 * sum(int(np.prod(s)) for _, s in specs))}
