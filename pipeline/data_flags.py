"""absl flags for data, task and augmentation, shared by every tool (train, evaluate, export...).

Define them once with ``define_flags()`` and turn them into a ``DataConfig`` with
``config_from_flags()``; library code takes the config, never the flags.
"""
from absl import flags

from pipeline import augment as aug
from pipeline.input_pipeline import DataConfig

FLAGS = flags.FLAGS


def define_flags(data_dir_default=None):
    if "data_dir" in FLAGS:
        return
    flags.DEFINE_string("data_dir", data_dir_default,
                        "Folder in the Speech Commands layout (archive or official test set).")
    flags.DEFINE_enum("task", None, ["v1-12", "v2-12", "v2-35", "custom"],
                      "Preset word list; v1-12/v2-12: 10 words + silence + unknown.")
    flags.DEFINE_list("wanted_words", None, "Keywords (comma separated); overrides --task words.")
    flags.DEFINE_enum("protocol", "tf", ["tf", "reference"],
                      "tf: silence cut from background noise, unknown sampled to "
                      "--unknown_percentage. reference: BiFSMNv2 code (all-zero silence, every "
                      "other word unknown).")
    flags.DEFINE_float("silence_percentage", None, "Silence examples per 100 keyword clips "
                       "(default 10; 0 drops the _silence_ class).")
    flags.DEFINE_float("unknown_percentage", None, "Unknown examples per 100 keyword clips "
                       "(default 10; 0 drops the _unknown_ class).")
    flags.DEFINE_float("validation_percentage", 10.0, "Used only when the folder has no lists.")
    flags.DEFINE_float("testing_percentage", 10.0, "Used only when the folder has no lists.")
    flags.DEFINE_string("split_salt", None,
                        "Split by the data set's hashing rule salted with this string, ignoring "
                        "the list files: another speaker-disjoint train/validation/test partition "
                        "(e.g. fold1, fold2, fold3 for a speaker-disjoint rotation).")
    flags.DEFINE_integer("seed", 59185, "Seed for sampling, shuffling and augmentation.")
    flags.DEFINE_string("cache_dir", None, "Cache decoded audio in files here (default: memory).")
    d = aug.AugmentConfig()
    flags.DEFINE_float("background_frequency", d.background_frequency,
                       "Probability of mixing background noise into a training clip.")
    flags.DEFINE_float("background_volume", d.background_volume,
                       "Maximum noise RMS as a fraction of the clip's RMS.")
    flags.DEFINE_float("time_shift_ms", d.time_shift_ms, "Maximum random time shift.")
    flags.DEFINE_float("speed_change", d.speed_change, "Speed/pitch factor range 1 +- this.")
    flags.DEFINE_float("gain_db", d.gain_db, "Random amplitude change range +- dB.")
    flags.DEFINE_bool("spec_augment", d.spec_augment, "SpecAugment masks on the features.")
    flags.DEFINE_integer("history_clips", d.history_clips,
                         "Streaming models: put the features of this many other clips of the "
                         "batch in front of each training clip (the label stays the clip's), "
                         "so the model learns to decide on its last second with real audio "
                         "before it, as in an always-on stream (pipeline/augment.py: "
                         "prepend_history).", lower_bound=0)
    flags.DEFINE_float("history_prob", d.history_prob,
                       "Probability that a training batch gets --history_clips (the others "
                       "keep the bare clips: a stream from reset).", lower_bound=0.0,
                       upper_bound=1.0)
    flags.DEFINE_float("history_tail_ms", d.history_tail_ms,
                       "With --history_clips: a silence example's window ends up to this long "
                       "before its clip's end, so it starts with the tail of the clip before "
                       "it (a word leaving the window), labelled silence (0: off).",
                       lower_bound=0.0)


def config_from_flags() -> DataConfig:
    if not FLAGS.data_dir:
        raise flags.ValidationError("--data_dir is required (a Speech Commands folder)")
    augment = aug.AugmentConfig(
        background_frequency=FLAGS.background_frequency,
        background_volume=FLAGS.background_volume, time_shift_ms=FLAGS.time_shift_ms,
        speed_change=FLAGS.speed_change, gain_db=FLAGS.gain_db, spec_augment=FLAGS.spec_augment,
        history_clips=FLAGS.history_clips, history_prob=FLAGS.history_prob,
        history_tail_ms=FLAGS.history_tail_ms)
    words = ",".join(FLAGS.wanted_words) if FLAGS.wanted_words else None
    return DataConfig(
        data_dir=FLAGS.data_dir, task=FLAGS.task, wanted_words=words, protocol=FLAGS.protocol,
        silence_percentage=FLAGS.silence_percentage, unknown_percentage=FLAGS.unknown_percentage,
        validation_percentage=FLAGS.validation_percentage,
        testing_percentage=FLAGS.testing_percentage, seed=FLAGS.seed,
        split_salt=FLAGS.split_salt, cache_dir=FLAGS.cache_dir,
        augment=augment)
