"""Train the DFSMN teacher or the thinnable BiFSMNv2 student (with FID distillation).

Reads: --data_dir (the clips), --teacher (a teacher run directory, for a student), the run in
  --out_dir (with --resume).
Writes: a run directory --out_dir (model.json, weights, ckpt/, flags.json, run.flags,
  history.json, metrics.json, tb/); the final metrics (--json_out).

    # teacher
    python -m pipeline.train --flagfile configs/real8_teacher.flags --out_dir runs/real8/teacher
    # student from the teacher, all depths at once, Frequency Independent Distillation
    python -m pipeline.train --flagfile configs/real8_bifsmnv2.flags \\
        --teacher runs/real8/teacher --out_dir runs/real8/bifsmnv2

Each epoch: a Keras progress bar, validation accuracy at every trained depth, TensorBoard logs
(``OUT/tb``), the last checkpoint (``OUT/ckpt``, model + optimizers + epoch; ``--resume``
continues from it identically: data order, augmentation and dropout are seeded by (seed,
epoch)), ``last.weights.h5`` and ``best.weights.h5`` (best validation accuracy at the deepest
depth). A NaN/inf loss stops the run with a message and leaves the last good checkpoint.
``OUT/flags.json`` records the flags and ``OUT/metrics.json`` the final metrics.
``OUT/run.flags`` holds them as an absl flagfile that reproduces the run
(``--flagfile=OUT/run.flags --out_dir=NEW``; paths absolute; ``run_flag_lines``).

``--strategy`` (tf.distribute): ``default`` is one device (the numbers of every earlier run);
``mirrored`` replicates the model on every local GPU (or logical CPU device), ``multi_worker``
across machines (``TF_CONFIG``). ``--batch_size`` stays the global batch: each step's batch is
cut into equal shares, one per replica (``_train_batches``), every loss term is a per-example
mean scaled by 1 / replicas and the gradients are all-reduced before clipping (``_step``),
batch norms use the statistics of the whole batch (``synchronize_batch_norms``): the same
training as on one device, to float rounding (tests/test_train_strategy.py). Checkpoints and
resume work as on one device; on a cluster the chief (worker 0) writes the run directory.

Run directories are transactional (pipeline/run_dirs.py): before the first file is written,
an ``--out_dir`` that is not a run of train's own is refused unless ``--overwrite``, and
``--resume`` compares the stored model.json / flags.json with the given flags and names every
difference; only --epochs, --lr and --clip_norm may change, recorded per epoch in history.json
(``epochs``, ``lr``) and in flags.json (``resumed_with``). Every JSON and weights file is
written to a temporary name and renamed (checkpoints.atomic_write_json / atomic_save_weights).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from absl import app, flags, logging

import models
from pipeline import checkpoints, cli, cli_vocabulary, data_flags, distill, output_paths
from pipeline.input_pipeline import InputPipeline, index_from_config
from pipeline import run_dirs
from pipeline import speech_commands as sc
from models.streaming import is_streaming_arch

import tensorflow as tf  # noqa: E402  (after `models`: Keras 2)

FLAGS = flags.FLAGS


def define_flags():
    """Flags of this tool (defined only when it runs, so tools can import each other)."""
    data_flags.define_flags()
    flags.DEFINE_string("arch", "dfsmn", "Model architecture (registry name): "
                        f"{', '.join(models.list_models())}.")
    flags.DEFINE_integer("channels", 128, "DFSMN backbone width C.")
    flags.DEFINE_integer("hidden", 256, "Hidden width of each layer's pointwise pair.")
    flags.DEFINE_integer("num_layers", 8, "Number of DFSMN layers.")
    flags.DEFINE_integer("left", 2, "Memory block: frames of left context.")
    flags.DEFINE_integer("right", 2, "Memory block: frames of right context.")
    flags.DEFINE_integer("dilation", 1, "Memory block dilation (stride over time).")
    flags.DEFINE_float("dropout", 0.2, "Dropout in the layers and before the classifier.")
    flags.DEFINE_integer("epochs", 100, "Training epochs.")
    flags.DEFINE_integer("steps_per_epoch", None, "Limit steps per epoch (tests, smoke runs).")
    flags.DEFINE_integer("batch_size", 96, "Batch size (the reference's 96).")
    flags.DEFINE_float("lr", 5e-3, "Peak learning rate.")
    flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay (coupled, as PyTorch SGD).")
    flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "SGD uses momentum 0.9.")
    flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "step", "plateau"],
                      "cosine: per step to 0; step: x0.1 at 50% and 75% of the epochs; plateau: "
                      "x0.5 after 5 epochs without validation gain.")
    flags.DEFINE_float("quant_lr_multiplier", 0.1,
                       "Learning-rate factor for thresholds and LPB alphas (the reference's 0.1).")
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy.")
    flags.DEFINE_float("clip_norm", 5.0,
                       "Clip the global gradient norm (0: off). The classifier reads 1,024 features "
                       "of mean square ~20, so plain SGD at lr 5e-3 diverges in the first epoch.")
    flags.DEFINE_string("out_dir", None, "Run directory (checkpoints, logs, metrics).")
    flags.DEFINE_string("teacher", None,
                        "Teacher run directory: initialises a binary student and, with --distill, "
                        "teaches it.")
    flags.DEFINE_string("init_from", None,
                        "Start from the weights of this run directory (its best.weights.h5; "
                        "the same --arch, sizes and labels): fine-tuning, e.g. a streaming "
                        "student continued with --history_clips. Replaces --init_from_teacher.")
    flags.DEFINE_bool("init_from_teacher", True, "Copy matching teacher weights into the student.")
    flags.DEFINE_bool("distill", True, "Distil from --teacher (logits MSE + FID).")
    flags.DEFINE_float("distill_alpha", 0.01, "Weight of the distillation terms.")
    flags.DEFINE_enum("logit_loss", "mse", list(distill.LOGIT_LOSSES),
                      "Distillation of the logits: 'mse' (the reference) or 'kl' (softened "
                      "teacher distribution at --kd_temperature; pipeline/distill.py).")
    flags.DEFINE_float("kd_temperature", 1.0, "Temperature tau of --logit_loss=kl.")
    flags.DEFINE_float("kd_weight", None, "Weight of the logits' term (default: --distill_alpha, "
                       "as the FID's).")
    flags.DEFINE_float("ce_weight", 1.0, "Weight of the cross-entropy with the labels (0 with "
                       "--logit_loss=kl --kd_weight=1: ReActNet's distributional loss).")
    flags.DEFINE_enum("select_pass", "fid", list(distill.SELECT_PASS),
                      "Bands distilled: fid (high and low separately), high, low, no (no wavelet).")
    flags.DEFINE_integer("J", 1, "Haar wavelet levels.")
    flags.DEFINE_integer("thin_n", 3, "Train the first thin_n depths (8, 4, 2, 1) at once; the "
                         "teacher default in the flagfiles is 1.")
    flags.DEFINE_bool("resume", False, "Continue the run in --out_dir from its last checkpoint.")
    flags.DEFINE_bool("overwrite", False, "Start afresh in an --out_dir that holds a run.")
    flags.DEFINE_integer("eval_batch_size", 256, "Validation batch size.")
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                      "tf.distribute strategy: default (one device), mirrored (every local GPU, "
                      "else every local CPU device), multi_worker (MultiWorkerMirroredStrategy, "
                      "cluster from TF_CONFIG). --batch_size is the global batch, split evenly "
                      "across the replicas.")
    cli_vocabulary.define_aliases("pipeline.train")  # --model, --teacher_checkpoint (old names)

MODEL_FLAGS = ("channels", "hidden", "num_layers", "left", "right", "dilation", "dropout")
STRATEGIES = ("default", "mirrored", "multi_worker")
#: flags of one invocation, not of the run: left out of run.flags
INVOCATION_FLAGS = ("resume", "overwrite")
#: path flags: written absolute to run.flags, so that it works from any folder
PATH_FLAGS = ("data_dir", "cache_dir", "out_dir", "teacher", "init_from")


class NonFiniteLoss(RuntimeError):
    pass


def make_strategy(name="default"):
    """The tf.distribute strategy of ``--strategy``. Create it before any other TensorFlow op
    runs: MultiWorkerMirroredStrategy sets up the runtime's collectives when it is made.

    * default: ``tf.distribute.get_strategy()`` (no distribution; the path of every earlier run).
    * mirrored: ``MirroredStrategy`` over every local GPU, or, without GPUs, over every local
      (logical) CPU device: one replica on a plain CPU machine, N when the CPU was split with
      ``tf.config.set_logical_device_configuration`` (how the tests run it).
    * multi_worker: ``MultiWorkerMirroredStrategy``; the cluster and this worker's task come from
      the ``TF_CONFIG`` environment variable (the same command on every worker)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(
            devices=[d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                   '"task": {"type": "worker", "index": 0}}')
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise cli.UserError(
                "--strategy multi_worker reads the cluster from the TF_CONFIG environment "
                f"variable, which is not set; expected TF_CONFIG on every worker, e.g. {example} "
                "(index 0 on the first worker, 1 on the second, ...)")
        try:
            conf = json.loads(raw)
            workers = conf["cluster"]["worker"]
            task = conf["task"]
            ok = isinstance(workers, list) and workers and task["type"] in ("worker", "chief")
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise cli.UserError(f"TF_CONFIG is not a cluster description ({raw[:200]!r}); "
                                f"expected JSON like {example}")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise app.UsageError(f"--strategy {name!r}: expected one of {', '.join(STRATEGIES)}")


def strategy_name(strategy) -> str:
    """The --strategy name of a strategy object (what metrics.json records)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return "default"


def synchronize_batch_norms(model) -> int:
    """Make every BatchNormalization of ``model`` compute its batch statistics over the global
    batch, all replicas together (tf_keras' ``synchronized=True``, switched on in the built
    layers: the models build them unsynchronised), as one device computes them over the whole
    batch. A synchronised BN is not fused; ``fused`` is turned off with it. Only for several
    replicas: the one-device path keeps the fused kernel (and its numbers). Returns the count."""
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.synchronized = True
            layer.fused = False
            n += 1
    return n


def is_chief(strategy) -> bool:
    """True on the worker that writes the run directory (always, except on the non-chief
    workers of a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    # without a "chief" task in the cluster, worker 0 is the chief (TF's convention)
    return task_type == "worker" and resolver.task_id == 0 and \
        "chief" not in resolver.cluster_spec().as_dict()


def _dropout_layers(model):
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        if isinstance(layer, tf.keras.layers.Dropout):
            out.append(layer)
    return out


def reseed_dropout(model, seed, epoch):
    """Dropout masks as a function of (seed, epoch, layer): a resumed epoch draws the same."""
    for i, layer in enumerate(_dropout_layers(model)):
        gen = getattr(layer._random_generator, "_generator", None)  # noqa: SLF001
        if gen is not None:
            gen.reset_from_seed(seed * 1_000_003 + epoch * 1009 + i)


def lr_at(schedule, base, epoch, step, steps_per_epoch, epochs, plateau_scale):
    if schedule == "cosine":
        t = (epoch * steps_per_epoch + step) / max(1, epochs * steps_per_epoch)
        return 0.5 * base * (1 + math.cos(math.pi * t))
    if schedule == "step":
        return base * (0.1 ** sum(epoch >= int(epochs * f) for f in (0.5, 0.75)))
    return base * plateau_scale


def run_settings(cfg, model_name, model_kwargs, **training) -> dict:
    """Everything that defines a run, named as its flags: what flags.json records and what a
    --resume is compared with (run_dirs.COMPARED / MAY_CHANGE), also for runs built in code."""
    aug = cfg.augment
    return {
        "data_dir": cfg.data_dir, "task": cfg.task,
        "wanted_words": sc.parse_words(cfg.wanted_words) or None, "protocol": cfg.protocol,
        "silence_percentage": cfg.silence_percentage,
        "unknown_percentage": cfg.unknown_percentage,
        "validation_percentage": cfg.validation_percentage,
        "testing_percentage": cfg.testing_percentage,
        "split_salt": cfg.split_salt, "seed": cfg.seed,
        "cache_dir": cfg.cache_dir,
        "background_frequency": aug.background_frequency,
        "background_volume": aug.background_volume, "time_shift_ms": aug.time_shift_ms,
        "speed_change": aug.speed_change, "gain_db": aug.gain_db,
        "spec_augment": aug.spec_augment,
        "history_clips": aug.history_clips, "history_prob": aug.history_prob,
        "history_tail_ms": aug.history_tail_ms,
        "arch": model_name, **model_kwargs, **training}


class Trainer:
    """One training run; the command line builds it from flags in ``trainer_from_flags``."""

    def __init__(self, cfg, model_name, model_kwargs, out_dir, epochs, batch_size, lr,
                 weight_decay=1e-4, optimizer="sgd", lr_schedule="cosine", quant_lr=0.1,
                 label_smoothing=0.0, clip_norm=5.0, teacher_dir=None, init_from_teacher=True,
                 use_distill=True, distill_alpha=0.01, select_pass="fid", levels=1, thin_n=3,
                 steps_per_epoch=None, eval_batch_size=256, resume=False, overwrite=False,
                 flag_values=None, strategy=None, run_flagfile=None, init_from=None,
                 logit_loss="mse", kd_temperature=1.0, kd_weight=None, ce_weight=1.0):
        self.cfg, self.out_dir = cfg, out_dir
        self.epochs, self.batch_size, self.base_lr = epochs, batch_size, lr
        self.weight_decay, self.lr_schedule = weight_decay, lr_schedule
        self.label_smoothing, self.alpha = label_smoothing, distill_alpha
        if logit_loss not in distill.LOGIT_LOSSES:
            raise cli.UserError(f"--logit_loss {logit_loss!r}: expected one of "
                                f"{', '.join(distill.LOGIT_LOSSES)}")
        if not kd_temperature > 0:
            raise cli.UserError(f"--kd_temperature {kd_temperature}: expected a positive number")
        if not ce_weight >= 0 or (kd_weight is not None and not kd_weight >= 0):
            raise cli.UserError(f"--ce_weight {ce_weight} / --kd_weight {kd_weight}: expected "
                                "weights >= 0")
        if ce_weight == 0 and (teacher_dir is None or not use_distill):
            raise cli.UserError("--ce_weight=0 leaves a model without a teacher nothing to learn "
                                "from; expected --teacher with --distill, or a positive "
                                "--ce_weight")
        self.logit_loss, self.kd_temperature = logit_loss, kd_temperature
        self.kd_weight, self.ce_weight = kd_weight, ce_weight
        self.clip_norm = clip_norm
        self.select_pass, self.levels = select_pass, levels
        self.eval_batch_size = eval_batch_size
        num_layers = model_kwargs.get("num_layers", 8)
        valid = models.valid_depths(num_layers)
        if not 1 <= thin_n <= len(valid):
            raise ValueError(f"--thin_n must be in 1..{len(valid)} for {num_layers} layers")
        self.depths = valid[:thin_n]
        self.weights = distill.depth_weights(self.depths, num_layers)
        # tf.distribute: --batch_size is the global batch, split evenly across the replicas
        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        # a real strategy (even with one replica) runs steps through strategy.run
        self.distributed = self.strategy is not tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.chief = is_chief(self.strategy)
        if batch_size % self.replicas:
            raise cli.UserError(
                f"--batch_size {batch_size} does not split evenly across the {self.replicas} "
                f"replicas of the strategy; expected a multiple of {self.replicas} (the global "
                "batch; each replica gets batch_size / replicas examples)")

        # 1. decide what may be written in out_dir, before anything is (pipeline/run_dirs.py)
        self.settings = run_settings(
            cfg, model_name, model_kwargs, epochs=epochs, lr=lr, batch_size=batch_size,
            steps_per_epoch=steps_per_epoch, thin_n=thin_n, optimizer=optimizer,
            weight_decay=weight_decay, lr_schedule=lr_schedule, quant_lr_multiplier=quant_lr,
            label_smoothing=label_smoothing, clip_norm=clip_norm, teacher=teacher_dir,
            init_from=init_from, init_from_teacher=init_from_teacher, distill=use_distill,
            distill_alpha=distill_alpha, select_pass=select_pass, J=levels,
            logit_loss=logit_loss, kd_temperature=kd_temperature, kd_weight=kd_weight,
            ce_weight=ce_weight, eval_batch_size=eval_batch_size)
        labels = sc.class_labels(cfg.task, cfg.wanted_words, cfg.silence_percentage,
                                 cfg.unknown_percentage)[0]
        self.spec = checkpoints.model_spec(model_name, model_kwargs, labels, self.depths)
        # --history_clips: longer training inputs, only for the causal streaming models (a
        # windowed model's every output depends on its 1 s window's edges)
        self.build_overrides = {}
        if cfg.augment.history_clips > 0:
            if not is_streaming_arch(model_name):
                raise cli.UserError(
                    f"--history_clips {cfg.augment.history_clips} with --arch {model_name}: "
                    "history is for the streaming models (dfsmn_stream, bifsmnv2_stream), "
                    "which take any number of frames; expected --history_clips 0")
            self.build_overrides = {"input_shape": (None, cfg.features.shape[1])}
        self.init_from = init_from
        self.plan = run_dirs.check(out_dir, self.spec, self.settings, resume, overwrite)
        # the chief writes the run directory; the other workers of a multi-worker cluster run
        # every save too (saving reads distributed variables, which takes all workers) but
        # into a folder of their own, removed at the end
        self.write_dir = out_dir if self.chief else tempfile.mkdtemp(prefix="train-worker-")
        self.write_plan = self.plan if self.chief else run_dirs.Plan(self.write_dir, "fresh")

        # 2. everything that can fail on the user's input, reading only
        self.index = index_from_config(cfg)
        self.pipe = InputPipeline(self.index, cfg)
        self.labels = self.index.labels
        n_train = self.pipe.num_examples("training")
        if n_train < batch_size:
            raise sc.DataError(f"{n_train} training examples < --batch_size {batch_size}; "
                               "expected at least one full batch")
        self.steps = min(steps_per_epoch or n_train // batch_size, n_train // batch_size)

        tf.keras.utils.set_random_seed(cfg.seed)
        tf.keras.backend.experimental.enable_tf_random_generator()
        with self.strategy.scope():
            self._build(cfg, teacher_dir, num_layers, init_from_teacher, use_distill, resume,
                        optimizer, lr, quant_lr)
        self.history = []
        if resume:
            self._restore(out_dir)

        # 3. the first writes
        run_dirs.start(self.write_plan)
        if not resume:
            checkpoints.write_model_json(self.write_dir, model_name, model_kwargs, self.labels,
                                         self.depths)
        run_dirs.write_flags(self.write_plan, {**self.settings, **(flag_values or {})},
                             int(self.epoch.numpy()))
        if run_flagfile is not None:
            run_dirs.write_run_flagfile(self.write_plan, run_flagfile, int(self.epoch.numpy()),
                                        {k: self.settings[k] for k in run_dirs.MAY_CHANGE})
        self.writer = tf.summary.create_file_writer(os.path.join(self.write_dir, "tb"))
        self._train_step = tf.function(self._distributed_step if self.distributed else
                                       self._step)
        self._eval_step = tf.function(lambda x: self.model(x, training=False))

    def _build(self, cfg, teacher_dir, num_layers, init_from_teacher, use_distill, resume,
               optimizer, lr, quant_lr):
        """Model, teacher, optimizers and checkpointed state (in the strategy's scope, so that
        with several replicas every variable is mirrored)."""
        self.model = checkpoints.build_from_spec(self.spec, training_depths=self.depths,
                                                 **self.build_overrides)
        if self.replicas > 1:
            synchronize_batch_norms(self.model)
        # initialise the dropout generators (created lazily on the first call); before any
        # weights are copied in, since a training call also moves the BN statistics
        self.model(tf.zeros((1,) + tuple(cfg.features.shape)), training=True)

        self.teacher = None
        if teacher_dir:
            tspec = checkpoints.read_model_json(teacher_dir)
            if tspec["labels"] != self.labels:
                raise checkpoints.CheckpointError(
                    f"teacher {teacher_dir} was trained on {tspec['labels']}, this run has "
                    f"{self.labels}")
            if self.build_overrides and not is_streaming_arch(tspec["model"]):
                raise cli.UserError(
                    f"--history_clips: the teacher {teacher_dir} is a {tspec['model']}, "
                    "which cannot take the longer inputs; expected a streaming teacher "
                    "(dfsmn_stream)")
            teacher = checkpoints.build_from_spec(tspec, training_depths=[num_layers],
                                                  **self.build_overrides)
            checkpoints.load_weights(teacher, checkpoints.weights_path(teacher_dir))
            if init_from_teacher and not resume and not self.init_from:
                report = models.init_student_from_teacher(self.model, teacher, verbose=False)
                logging.info("student initialised from %s: %d variables copied, %d left at init",
                             teacher_dir, len(report["copied"]), len(report["student_only"]))
                if report["shape_mismatch"]:
                    raise checkpoints.CheckpointError(
                        f"teacher and student differ in shape: {report['shape_mismatch'][:5]}")
            if use_distill:
                self.teacher = teacher

        quant = models.quant_variables(self.model)
        quant_ids = {id(v) for v in quant}
        self.main_vars = [v for v in self.model.trainable_variables if id(v) not in quant_ids]
        self.quant_vars = [v for v in self.model.trainable_variables if id(v) in quant_ids]
        self.quant_lr = quant_lr

        def make_opt():
            if optimizer == "sgd":
                return tf.keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
            return tf.keras.optimizers.Adam(learning_rate=lr)

        self.opt, self.qopt = make_opt(), make_opt()
        self.opt.build(self.main_vars)
        if self.quant_vars:
            self.qopt.build(self.quant_vars)
        if self.init_from and not resume:
            self._init_from_run(self.init_from)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_accuracy")
        self.plateau = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="plateau_scale")
        self.since_best = tf.Variable(0, dtype=tf.int64, trainable=False, name="since_best")
        self.ckpt = tf.train.Checkpoint(model=self.model, opt=self.opt, qopt=self.qopt,
                                        epoch=self.epoch, best=self.best, plateau=self.plateau,
                                        since_best=self.since_best)
        self.manager = tf.train.CheckpointManager(
            self.ckpt, os.path.join(self.write_dir, run_dirs.CKPT_DIR), 2)

    def _init_from_run(self, run_dir):
        """--init_from: the weights of another run of the same model (fine-tuning)."""
        spec = checkpoints.read_model_json(run_dir)
        # the resume check's comparison of model.json, minus the trained depths (--thin_n
        # may change: the weights are the same)
        diffs = [d for d in run_dirs.differences(spec, None, self.spec, {}) if d[0] != "thin_n"]
        if diffs or spec.get("model_kwargs", {}).keys() != self.spec["model_kwargs"].keys():
            said = ", ".join(f"--{k} {a} there, {b} here" for k, a, b in diffs) or \
                f"{spec.get('model_kwargs')} there, {self.spec['model_kwargs']} here"
            raise checkpoints.CheckpointError(
                f"--init_from {run_dir}: {said}; expected the same architecture, sizes and "
                "labels")
        checkpoints.load_weights(self.model, checkpoints.weights_path(run_dir))
        logging.info("initialised from %s", checkpoints.weights_path(run_dir))

    def _restore(self, out_dir):
        """--resume: the checkpoint and history.json, read only (run_dirs.check matched the
        settings already). Every worker restores from the run directory's checkpoint."""
        latest = run_dirs.latest_checkpoint(out_dir)
        try:
            self.ckpt.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise checkpoints.CheckpointError(
                f"--resume: cannot restore {latest} ({str(e).splitlines()[0][:300]}); expected "
                "the checkpoint pipeline.train wrote for these settings") from e
        hist = os.path.join(out_dir, "history.json")
        if os.path.exists(hist):
            try:
                with open(hist) as f:
                    self.history = json.load(f)[: int(self.epoch.numpy())]
            except (ValueError, TypeError) as e:
                raise checkpoints.CheckpointError(
                    f"--resume: {hist} is damaged ({e}); expected the history.json written "
                    "by pipeline.train") from e
        logging.info("resumed %s at epoch %d", latest, int(self.epoch.numpy()))

    # -- one step -------------------------------------------------------------------------
    def _step(self, x, y):
        """One optimisation step on (x, y): the whole batch with one replica; with several,
        this replica's share (``_distributed_step`` runs it in every replica). Every loss term
        is a mean over the replica's examples (cross-entropy, logit MSE, r2b per example), so
        with the total scaled by 1 / replicas the SUM of the replicas' gradients, all-reduced
        before clipping, is the gradient of the global batch's mean that one device computes
        (equal shares; batch norms synchronised, ``synchronize_batch_norms``). The weight
        decay term, the same on every replica, is scaled alike and so counts once."""
        teacher_logits = teacher_feats = None
        if self.teacher is not None:
            t_logits, t_feats = models.split_training_outputs(self.teacher(x, training=False))
            deepest = max(t_logits)
            teacher_logits, teacher_feats = t_logits[deepest], t_feats[deepest]
        with tf.GradientTape() as tape:
            logits, feats = models.split_training_outputs(self.model(x, training=True))
            loss, terms = distill.student_loss(
                y, logits, self.weights, feats, teacher_logits, teacher_feats, self.alpha,
                self.select_pass, self.levels, self.label_smoothing, self.logit_loss,
                self.kd_temperature, self.kd_weight, self.ce_weight)
            decay = tf.add_n([tf.reduce_sum(tf.square(v)) for v in self.main_vars])
            total = loss + 0.5 * self.weight_decay * decay
            if self.replicas > 1:
                total = total / self.replicas
        grads = tape.gradient(total, self.main_vars + self.quant_vars)
        apply = {}
        if self.replicas > 1:  # the global gradient first: clipping needs its norm
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads)
            apply = {"skip_gradients_aggregation": True}
        if self.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        self.opt.apply_gradients(zip(grads[:len(self.main_vars)], self.main_vars), **apply)
        if self.quant_vars:
            self.qopt.apply_gradients(zip(grads[len(self.main_vars):], self.quant_vars),
                                      **apply)
        accs = {f"acc_d{d}": tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(z, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32))
            for d, z in logits.items()}
        return loss, terms, accs

    def _distributed_step(self, x, y):
        """``_step`` in every replica on its share of the global batch; the loss, its terms
        and the accuracies returned are means over the replicas, i.e. over the global batch."""
        loss, terms, accs = self.strategy.run(self._step, args=(x, y))

        def mean(v):
            return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)

        return mean(loss), {k: mean(v) for k, v in terms.items()}, \
            {k: mean(v) for k, v in accs.items()}

    def _train_batches(self, epoch):
        """The epoch's global batches of --batch_size (seeded by (seed, epoch, batch)). With
        several replicas each batch is cut into equal shares, replica r taking examples
        [r * b, (r + 1) * b), b = batch_size / replicas: every strategy and replica count
        trains on the same examples in the same steps. Each worker of a cluster reads the
        whole batch and keeps its replicas' shares (augmentation is drawn per batch)."""
        if not self.distributed:
            return self.pipe.train(self.batch_size, epoch=epoch)
        share = self.batch_size // self.replicas
        replicas = self.replicas

        def per_worker(ctx):
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            first = ctx.input_pipeline_id * local

            def shares(x, y):
                x = tf.reshape(x, tf.concat([[replicas, share], tf.shape(x)[1:]], 0))
                y = tf.reshape(y, [replicas, share])
                return tf.data.Dataset.from_tensor_slices(
                    (x[first:first + local], y[first:first + local]))

            ds = self.pipe.train(self.batch_size, epoch=epoch).take(self.steps)
            return ds.flat_map(shares)

        return self.strategy.distribute_datasets_from_function(per_worker)

    def evaluate(self, split="validation"):
        correct = {d: 0 for d in self.depths}
        n = 0
        for x, y in self.pipe.eval(split, self.eval_batch_size):
            logits, _ = models.split_training_outputs(self._eval_step(x))
            y = y.numpy()
            for d, z in logits.items():
                correct[d] += int(np.sum(np.argmax(z.numpy(), -1) == y))
            n += len(y)
        return {d: correct[d] / max(n, 1) for d in self.depths}

    # -- the loop -------------------------------------------------------------------------
    def fit(self):
        start_epoch = int(self.epoch.numpy())
        for epoch in range(start_epoch, self.epochs):
            reseed_dropout(self.model, self.cfg.seed, epoch)
            print(f"Epoch {epoch + 1}/{self.epochs}")
            bar = tf.keras.utils.Progbar(self.steps, stateful_metrics=["lr"])
            t0 = time.perf_counter()
            sums = {}
            for step, (x, y) in enumerate(self._train_batches(epoch)):
                if step >= self.steps:
                    break
                lr = lr_at(self.lr_schedule, self.base_lr, epoch, step, self.steps, self.epochs,
                           float(self.plateau.numpy()))
                self.opt.learning_rate.assign(lr)
                self.qopt.learning_rate.assign(lr * self.quant_lr)
                loss, terms, accs = self._train_step(x, y)
                loss = float(loss)
                if not math.isfinite(loss):
                    raise NonFiniteLoss(
                        f"loss became {loss} at epoch {epoch + 1} step {step + 1}; stopping. The "
                        f"last good checkpoint is kept: {self.manager.latest_checkpoint}. Try a "
                        "lower --lr.")
                values = {"loss": loss, **{k: float(v) for k, v in accs.items()}}
                for k, v in {**values, **{k: float(v) for k, v in terms.items()}}.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.update(step + 1, list(values.items()) + [("lr", lr)])
            seconds = time.perf_counter() - t0
            val = self.evaluate("validation")
            deepest = max(self.depths)
            means = {k: v / self.steps for k, v in sums.items()}
            record = {"epoch": epoch + 1, "epochs": self.epochs, "lr": self.base_lr,
                      "seconds": round(seconds, 2),
                      "steps_per_s": round(self.steps / seconds, 3), "replicas": self.replicas,
                      **means,
                      **{f"val_acc_d{d}": a for d, a in val.items()}}
            self.history.append(record)
            print("  " + "  ".join(f"val_acc_d{d} {a:.4f}" for d, a in val.items()) +
                  f"  ({seconds:.1f} s, {self.steps / seconds:.2f} steps/s)")
            with self.writer.as_default(step=epoch + 1):
                for k, v in record.items():
                    if k != "epoch":
                        tf.summary.scalar(k, v)
            checkpoints.atomic_save_weights(self.model,
                                            os.path.join(self.write_dir, "last.weights.h5"))
            if val[deepest] > float(self.best.numpy()):
                self.best.assign(val[deepest])
                self.since_best.assign(0)
                checkpoints.atomic_save_weights(self.model,
                                                os.path.join(self.write_dir, "best.weights.h5"))
            else:
                self.since_best.assign_add(1)
                if self.lr_schedule == "plateau" and int(self.since_best.numpy()) >= 5:
                    self.plateau.assign(self.plateau * 0.5)
                    self.since_best.assign(0)
            self.epoch.assign(epoch + 1)
            # history first: a kill between the two leaves history ahead of the checkpoint,
            # and --resume truncates it to the checkpoint's epoch
            checkpoints.atomic_write_json(os.path.join(self.write_dir, "history.json"),
                                          self.history, indent=1)
            self.manager.save()
        return self.finish()

    def finish(self):
        secs = [h["seconds"] for h in self.history]
        metrics = {
            "model": self.spec["model"], "labels": self.labels, "depths": self.depths,
            "epochs": len(self.history),
            "best_val_acc": float(self.best.numpy()),
            "final_val": {k: v for k, v in (self.history[-1] if self.history else {}).items()
                          if k.startswith("val_acc")},
            "median_seconds_per_epoch": float(np.median(secs)) if secs else None,
            "median_steps_per_s": float(np.median([h["steps_per_s"] for h in self.history]))
            if self.history else None,
            "steps_per_epoch": self.steps, "batch_size": self.batch_size,
            "train_examples": self.pipe.num_examples("training"),
            "strategy": strategy_name(self.strategy), "replicas": self.replicas,
        }
        checkpoints.atomic_write_json(os.path.join(self.write_dir, "metrics.json"), metrics,
                                      indent=2)
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
        return metrics


def run_flag_lines(flag_values=None):
    """The lines of a run's ``run.flags``: every flag of pipeline.train and of the data flags
    as absl serialises it (what ``--flagfile`` reads back: ``--name=value``, ``--[no]bool``),
    paths made absolute (``PATH_FLAGS``). Left out: the flags of one invocation
    (``INVOCATION_FLAGS``: --resume, --overwrite; cli.run's --json_out, --debug), flags without
    a value, and deprecated aliases. Returns [(name, line)]."""
    fv = FLAGS if flag_values is None else flag_values
    lines, seen = [], set()
    for module in (sys.modules[__name__], data_flags):
        for flag in fv.get_key_flags_for_module(module):
            if flag.name in seen:
                continue
            seen.add(flag.name)
            if flag.name in INVOCATION_FLAGS or flag.name in cli_vocabulary.COMMON_FLAGS or \
                    flag.value is None or cli_vocabulary.is_alias(flag):
                continue
            if flag.name in PATH_FLAGS:
                lines.append((flag.name, f"--{flag.name}={os.path.abspath(flag.value)}"))
            else:
                lines.append((flag.name, flag.serialize()))
    return lines


def trainer_from_flags(strategy=None):
    cfg = data_flags.config_from_flags()
    if not FLAGS.out_dir:
        raise app.UsageError("--out_dir is required")
    model_kwargs = {k: getattr(FLAGS, k) for k in MODEL_FLAGS}
    return Trainer(
        cfg, FLAGS.arch, model_kwargs, FLAGS.out_dir, FLAGS.epochs, FLAGS.batch_size, FLAGS.lr,
        FLAGS.weight_decay, FLAGS.optimizer, FLAGS.lr_schedule, FLAGS.quant_lr_multiplier,
        FLAGS.label_smoothing, FLAGS.clip_norm, FLAGS.teacher,
        FLAGS.init_from_teacher, FLAGS.distill, FLAGS.distill_alpha, FLAGS.select_pass, FLAGS.J, FLAGS.thin_n, FLAGS.steps_per_epoch,
        FLAGS.eval_batch_size, FLAGS.resume, FLAGS.overwrite,
        init_from=FLAGS.init_from, logit_loss=FLAGS.logit_loss,
        kd_temperature=FLAGS.kd_temperature, kd_weight=FLAGS.kd_weight,
        ce_weight=FLAGS.ce_weight,
        flag_values={f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])
                     + FLAGS.get_key_flags_for_module(data_flags)
                     if f.name not in cli_vocabulary.COMMON_FLAGS},  # not --json_out, --debug
        strategy=strategy, run_flagfile=run_flag_lines())


def main(argv):
    del argv
    strategy = make_strategy(FLAGS.strategy)  # first: multi_worker sets up the runtime
    if FLAGS.arch not in models.list_models():
        raise app.UsageError(f"--arch {FLAGS.arch!r}: expected one of {models.list_models()}")
    problem = models.registry.kwargs_problem(FLAGS.arch, {k: getattr(FLAGS, k)
                                                          for k in MODEL_FLAGS})
    if problem:  # e.g. a streaming model with look-ahead (--right > 0)
        raise app.UsageError(f"--arch {FLAGS.arch}: {problem}")
    if not FLAGS.out_dir:
        raise app.UsageError("--out_dir is required (the run directory to write)")
    valid = models.valid_depths(FLAGS.num_layers)
    if not 1 <= FLAGS.thin_n <= len(valid):
        raise app.UsageError(f"--thin_n {FLAGS.thin_n}: expected 1..{len(valid)} for "
                             f"--num_layers {FLAGS.num_layers} (depths {valid})")
    output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    output_paths.check_dir(FLAGS.cache_dir, "--cache_dir")
    metrics = trainer_from_flags(strategy).fit()
    print(json.dumps(metrics))
    return metrics  # --json_out


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(NonFiniteLoss,))
