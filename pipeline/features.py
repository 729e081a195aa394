"""Log-mel features of the BiFSMNv2 reference, in TensorFlow ops.

The reference (torchaudio ``MelSpectrogram(n_fft=2048, hop_length=512, n_mels=32,
normalized=True)`` then ``AmplitudeToDB``) computes, for 1 s of 16 kHz audio x:

    xp      = reflect_pad(x, n_fft/2)                       (centered frames)
    X[t, k] = sum_n w[n] xp[t*hop + n] e^{-2 pi i k n / n_fft},  w = periodic Hann(n_fft)
    P[t, k] = |X[t, k]|^2 / sum_n w[n]^2                     ("normalized" STFT, power 2)
    M[t, m] = sum_k P[t, k] W[k, m]                          (W: HTK-mel triangles, 0..8 kHz)
    F[t, m] = 10 log10(max(M[t, m], 1e-10))                  (dB)

giving F with shape (32 frames, 32 mels): time first, the layout the models take. The mel
matrix is TensorFlow's ``linear_to_mel_weight_matrix`` (HTK mel scale, triangles built in mel
space, DC bin zero); torchaudio builds its triangles in Hz, so absolute values differ slightly
from the PyTorch reference, which does not matter for a model trained on these features.

The same function runs in tf.data (batched) and inside an exported model (``LogMel`` layer),
so training and deployment share one definition.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    clip_samples: int = 16000
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 32
    f_min: float = 0.0
    f_max: float = 8000.0
    amin: float = 1e-10

    @property
    def num_frames(self) -> int:
        return 1 + self.clip_samples // self.hop  # centered frames

    @property
    def shape(self):
        return (self.num_frames, self.n_mels)


DEFAULT = FeatureConfig()


def mel_matrix(cfg: FeatureConfig = DEFAULT) -> tf.Tensor:
    """[n_fft/2 + 1, n_mels] HTK-mel filterbank."""
    return tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=cfg.n_mels, num_spectrogram_bins=cfg.n_fft // 2 + 1,
        sample_rate=cfg.sample_rate, lower_edge_hertz=cfg.f_min, upper_edge_hertz=cfg.f_max)


def log_mel(audio: tf.Tensor, cfg: FeatureConfig = DEFAULT) -> tf.Tensor:
    """float32 audio [..., clip_samples] in [-1, 1] -> dB log-mel [..., frames, n_mels]."""
    audio = tf.convert_to_tensor(audio, tf.float32)
    pad = cfg.n_fft // 2
    rank = audio.shape.rank
    padded = tf.pad(audio, [[0, 0]] * (rank - 1) + [[pad, pad]], mode="REFLECT")
    window = tf.signal.hann_window(cfg.n_fft, periodic=True)
    spec = tf.signal.stft(padded, frame_length=cfg.n_fft, frame_step=cfg.hop,
                          fft_length=cfg.n_fft, window_fn=lambda n, dtype: window, pad_end=False)
    power = tf.square(tf.abs(spec)) / tf.reduce_sum(tf.square(window))
    mel = tf.tensordot(power, mel_matrix(cfg), axes=1)
    return 10.0 * tf.math.log(tf.maximum(mel, cfg.amin)) / tf.math.log(10.0)


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class LogMel(tf.keras.layers.Layer):
    """Keras layer: raw 16 kHz PCM [B, samples] -> log-mel [B, frames, mels] (``log_mel``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cfg = DEFAULT

    def call(self, audio):
        return log_mel(audio, self.cfg)
