"""Export trained checkpoints to .tflite, verify them, and report what the converter made.

Reads: --model (a run directory of pipeline.train), --teacher (the teacher's, for the float /
  int8 baselines of a student), --data_dir (validation clips to verify, test clips to score).
Writes: into --out_dir: <name>.tflite, its report <name>.json / .md, exports.json / .md; the
  per-export summary and reports (--json_out).

    # binary student, LCE converter, every trained depth (8,4,2 by default)
    python -m pipeline.export --model runs/real8/bifsmnv2 --out_dir build/export \\
        --data_dir ../shared/data/speech_commands_real8 \\
        --wanted_words yes,no,up,down,left,right,stop,go --unknown_percentage 0
    # full-precision teacher baselines: float and full-integer int8
    python -m pipeline.export --model runs/real8/teacher --out_dir build/export \\
        --flavor float,int8 --data_dir ... (same data flags)
    # front end (log-mel, tf.signal.stft) inside the model: input raw 16 kHz PCM [1, 16000]
    python -m pipeline.export --model runs/real8/bifsmnv2 --depth 8 --audio_input ...
    # every DFSMN layer one bitwise custom op (lce_kernels.ops.BDFSMN), the rest builtin
    python -m pipeline.export --model runs/real8/bifsmnv2 --depth 8 --flavor bdfsmn ...
    # streaming (dfsmn_stream / bifsmnv2_stream runs): one 128 ms hop per invoke, state
    # tensors in and out (pipeline/streaming_export.py)
    python -m pipeline.export --model runs/real8/bifsmnv2_stream --flavor lce --streaming ...

Flavors
  lce    binary student through the LCE converter (``larq_compute_engine.convert_saved_model``
         of the inference SavedModel, see ``inference_saved_model``; the same flatbuffer as
         ``convert_keras_model``, 7x faster): binary convs become ``ops.BCONV2D``; float32
         input and output, batch 1.
  bdfsmn binary student with every DFSMN layer as ONE ``ops.BDFSMN`` custom op (lce_kernels/:
         bit-packed weights, FlexBuffers options) and builtin ops otherwise: the front end
         (conv1, binary conv2 / linear as float ops computing the same binary function) and
         the classifier through the plain ``tf.lite.TFLiteConverter``, the custom ops spliced
         in with the flatbuffer schema module (see ``pipeline.bdfsmn`` for why). Runs on
         TensorFlow's ``InterpreterWithCustomOps`` with the op library's registerer
         (``ops.registerers()``; ``pipeline.predictors`` does it). Features input only. The
         report adds ``bdfsmn``: ``ops.BDFSMN`` count, layers, builtin-only check, backbone
         weight bytes packed vs float32.
  binary the deployment artifact (``pipeline.binary_artifact``): the lce flavor's flatbuffer
         with every DFSMN layer's op chain replaced by ONE ``ops.BDFSMN`` (the bdfsmn flavor's
         op), unused tensors / buffers dropped: only conv1 and the classifier stay float.
         Runs on InterpreterWithCustomOps with the project's registerer (every op of
         ``ops.ALL_OPS``). Features input only. The report adds ``binary``: census checks and where
         the bytes go.
  float  full-precision teacher through ``tf.lite.TFLiteConverter`` (float32 in / out).
  int8   teacher, full-integer post-training quantization (``Optimize.DEFAULT`` with a
         representative dataset of ``--representative_clips`` training clips' features, no
         augmentation; ``TFLITE_BUILTINS_INT8`` only): input int8 features, output int8
         logits, each with the scale / zero point stored in the model (and in the report).
         With ``--audio_input`` the STFT front end has no int8 kernel: that model keeps
         float32 PCM input, a float front end, int8 weights/activations after it and
         float32 output (mixed, not full-integer; the report says so).

Every export writes ``OUT/<name>.tflite`` (name ``<model>_<flavor>_d<depth>[_pcm]``), which
describes itself: its metadata holds the class names, input kind, feature configuration,
architecture, depth, flavor and project version (``pipeline.tflite_metadata``; also in the
report as ``description``), so the file alone runs in every tool. Beside it
``OUT/<name>.json`` (the report; as the sidecar it adds ``sha256``, the SHA-256 of the whole
file: a tool warns when the file no longer matches it) and ``OUT/<name>.md``;
``OUT/exports.json`` / ``OUT/exports.md`` index every export in the folder (runs add to it).

Verification (run by the export itself, before the .tflite is written):
  * the .tflite (LCE interpreter for lce, TensorFlow's interpreter for float / int8) against
    the Keras model on the first ``--verify_clips`` clips of the validation split (bdfsmn:
    TensorFlow's InterpreterWithCustomOps with the op library's registerer): top-1
    agreement and |logit difference|. A PCM-input export is compared with the Keras model on
    the pipeline's features of the same clips (the end-to-end "features + model" path).
  * lce exports: every binary conv of the Keras model must have become ``ops.BCONV2D``.
  * bdfsmn exports: exactly one ``ops.BDFSMN`` per DFSMN layer run at the depth, and no custom
    op besides it.
  * test-split accuracy of the .tflite through ``pipeline.evaluate.run`` (``--notest_accuracy``
    skips it).
Thresholds (top-1 agreement): lce >= 0.99, bdfsmn >= 0.99, float >= 0.99, int8 >= 0.95 (``--min_agreement``
overrides). Logit differences are reported, not gated: a binary network flips a sign where a
pre-binarization value is within float rounding of a threshold, which changes logits of that
clip by O(1) while the top-1 class usually stays. A failed export writes its report (json/md)
but no .tflite, and the command exits with status 1, unless ``--force``.
(``ops``: ``lce_kernels.ops``, the op contract: op names, operands, registerers.)
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import time

import numpy as np
from absl import app, flags

import models
from lce_kernels import ops
from models.lce_census import constant_bytes, format_census, op_census, ops_in_scope
from pipeline import checkpoints, cli, cli_vocabulary, data_flags, output_paths, predictors
from pipeline import model_contract, tflite_metadata
from pipeline.input_pipeline import InputPipeline, index_from_config
from pipeline.speech_commands import DataError

import tensorflow as tf  # noqa: E402  (after `models`: Keras 2)

FLAGS = flags.FLAGS

FLAVORS = ("lce", "bdfsmn", "binary", "float", "int8")
BINARY_FLAVORS = ("lce", "bdfsmn", "binary")
MIN_AGREEMENT = {"lce": 0.99, "bdfsmn": 0.99, "binary": 0.99, "float": 0.99,
                 "int8": 0.95}
BDFSMN_FRONT_REASON = ("binary front-end conv: runs as builtin float ops computing the same "
                       "binary function (SIGN, dual-scale MUL/ADD, the quantized kernel "
                       "sign(w)*mean|w| as a float constant): no Python runtime runs LCE ops "
                       f"and {ops.BDFSMN} in one model")
INDEX_JSON, INDEX_MD = "exports.json", "exports.md"
SIZE_FLAGS = ("channels", "hidden", "num_layers")

MEMORY_REASON = ("binary depthwise conv (memory block): LCE has no binary depthwise kernel "
                 "(a grouped binary conv needs >= 32 input channels per group), so it runs as "
                 "a float DEPTHWISE_CONV_2D on the dual-scale activation; expected")
FALLBACK_REASON = ("the converter did not lower this binary conv: its input is not straight "
                   "from a sign binarizer or its kernel is not +-alpha per output channel")


class ExportError(RuntimeError):
    """A request the export cannot serve (wrong flavor for the model, no data...)."""


def define_flags():
    """Flags of this tool (defined only when it runs, so tools can import each other)."""
    data_flags.define_flags()
    flags.DEFINE_string("model", None, "Run directory (or .weights.h5) of pipeline.train.")
    flags.DEFINE_string("teacher", None, "Teacher run directory: float / int8 baselines (and the "
                        "storage reference) when --model is the binary student.")
    flags.DEFINE_string("out_dir", None, "Output folder (.tflite, reports, exports.md).")
    flags.DEFINE_list("depth", None, "Thinnable depths to export (default: the checkpoint's "
                      "training depths for lce; the deepest for float / int8).")
    flags.DEFINE_list("flavor", None, "lce, bdfsmn, float, int8 (default: lce for a binary model, "
                      "float,int8 for the full-precision teacher).")
    flags.DEFINE_bool("audio_input", False, "Put the log-mel front end (tf.signal.stft) inside "
                      "the model: input raw 16 kHz PCM [1, 16000] instead of features [1, 32, 32].")
    flags.DEFINE_bool("streaming", False, "One hop per invoke, state tensors in and out "
                      "(pipeline/streaming_export.py): for dfsmn_stream (--flavor float) and "
                      "bifsmnv2_stream (--flavor lce or binary) runs; name <...>_streaming.")
    flags.DEFINE_integer("hop_frames", 4, "--streaming: feature frames per invoke, a multiple "
                         "of 4 (4: one backbone frame, 128 ms; 8: 256 ms, the windowed loop's "
                         "decision rate); names other than 4 end in _hop<frames>.")
    flags.DEFINE_bool("force", False, "Write the .tflite even if verification fails.")
    flags.DEFINE_integer("verify_clips", 500, "Validation clips for Keras-vs-tflite agreement.")
    flags.DEFINE_bool("test_accuracy", True, "Evaluate each .tflite on the test split.")
    flags.DEFINE_integer("representative_clips", 200, "Training clips for int8 calibration.")
    flags.DEFINE_float("min_agreement", None, "Override the top-1 agreement thresholds "
                       f"({MIN_AGREEMENT}).")
    flags.DEFINE_string("arch", None, "Optional check: the registry name --model must have.")
    for name in SIZE_FLAGS:
        flags.DEFINE_integer(name, None, f"Optional: build with this {name} (must match the "
                             "checkpoint; a mismatch is reported as an error).")
    cli_vocabulary.define_aliases("pipeline.export")  # --checkpoint (old name of --model)


# -- models ------------------------------------------------------------------------------------
def is_binary(model) -> bool:
    return any(getattr(l, "binary", False) for l in model._flatten_layers(include_self=False))


def is_binary_name(model_name) -> bool:
    """Binary registry model (bifsmnv2, bifsmnv2_ste...) or full precision (dfsmn)?"""
    builder = models.registry._REGISTRY.get(model_name)
    return bool(getattr(builder, "keywords", {}).get("binary", model_name != "dfsmn"))


def load_keras(checkpoint, depth, overrides=None, spec=None):
    """Model at ``depth`` with the checkpoint's weights (``checkpoints.load_model``);
    CheckpointError on any mismatch. ``spec``: the checkpoint's model.json if already read."""
    spec = checkpoints.read_model_json(checkpoint) if spec is None else spec
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = overrides.pop("model", None)
    if name and name != spec["model"]:
        raise checkpoints.CheckpointError(
            f"{checkpoint} holds a {spec['model']!r} model (model.json) but --arch is {name!r}")
    num_layers = overrides.get("num_layers", spec["model_kwargs"].get("num_layers", 8))
    if depth not in models.valid_depths(num_layers):
        raise checkpoints.CheckpointError(
            f"depth {depth} is not a thinnable depth of a {num_layers}-layer model "
            f"(valid: {models.valid_depths(num_layers)})")
    return checkpoints.load_model(checkpoint, depth=depth, spec=spec, **overrides)


def with_audio_front_end(model):
    """PCM [B, 16000] -> LogMel -> ``model``: the whole pipeline in one graph."""
    from pipeline.features import DEFAULT, LogMel
    inp = tf.keras.Input((DEFAULT.clip_samples,), name="audio")
    out = model(LogMel(name="log_mel")(inp), training=False)
    return tf.keras.Model(inp, out, name=f"{model.name}_pcm")


def binary_layers(model):
    """Binary layers of the Keras model: [(kind, scope)] with scope the weight name scope
    (``conv2``, ``dfsmn/layer3/pw1``, ``dfsmn/layer3/memory``...)."""
    from models.dual_scale import QuantConvBN
    from models.memory_block import MemoryBlock
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, QuantConvBN) and layer.binary:
            out.append(("conv", layer.conv.kernel.name.rsplit("/conv/", 1)[0]))
        elif isinstance(layer, MemoryBlock) and layer.binary:
            out.append(("memory", layer.dwconv.depthwise_kernel.name.rsplit("/dwconv/", 1)[0]))
    return out


def active_scope(scope, depth, num_layers):
    """Is the layer ``scope`` run at ``depth``? (dfsmn/layer{j} only in the depth's layer set)."""
    parts = scope.split("/")
    if len(parts) > 1 and parts[0] == "dfsmn" and parts[1].startswith("layer"):
        j = int(parts[1][len("layer"):])
        return j in models.layer_set(models.depth_index(depth, num_layers), num_layers)
    return True


def bdfsmn_layer_report(model, flatbuffer, depth, num_layers):
    """bdfsmn flavor: every DFSMN layer run at ``depth`` one ``ops.BDFSMN``; front end float."""
    rows = []
    for kind, scope in binary_layers(model):
        if not active_scope(scope, depth, num_layers):
            continue
        parts = scope.split("/")
        if parts[0] == "dfsmn":
            layer = "/".join(parts[:2])
            found = [o for o in ops_in_scope(flatbuffer, layer) if o["op"] == ops.BDFSMN
                     and o["outputs"][0][0].startswith(ops.bdfsmn_tensor_name(layer, ""))]
            status = ops.BDFSMN if len(found) == 1 else "missing"
            reason = (f"part of the {layer} {ops.BDFSMN} op (whole layer bitwise)" if found
                      else f"no {ops.BDFSMN} op for this layer")
        else:
            status, reason = "float", BDFSMN_FRONT_REASON
        rows.append({"layer": scope, "kind": kind, "status": status, "lce_bconv2d": 0,
                     "float_ops": [], "reason": reason})
    return rows


def binary_artifact_layer_report(model, flatbuffer, depth, num_layers):
    """binary flavor (windowed or streaming): the front end's binary convs ``ops.BCONV2D``
    (``binary_layer_report``), every DFSMN layer one ``ops.BDFSMN`` (``bdfsmn_layer_report``)."""
    return [r for r in binary_layer_report(model, flatbuffer, depth, num_layers)
            if not r["layer"].startswith("dfsmn/")] + [
        r for r in bdfsmn_layer_report(model, flatbuffer, depth, num_layers)
        if r["layer"].startswith("dfsmn/")]


def binary_layer_report(model, flatbuffer, depth, num_layers):
    """For every binary layer run at ``depth``: did it become ``ops.BCONV2D``, or stay float
    (why)?"""
    rows = []
    for kind, scope in binary_layers(model):
        if not active_scope(scope, depth, num_layers):
            continue
        names = [o["op"] for o in ops_in_scope(flatbuffer, scope)]
        n_lce = names.count(ops.BCONV2D)
        float_ops = [n for n in names if n in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
        if n_lce:
            status, reason = ops.BCONV2D, (f"{n_lce} {ops.BCONV2D} (one per bit plane of the "
                                           "dual-scale activation, shared filter)")
        elif kind == "memory":
            status, reason = "float", MEMORY_REASON
        elif float_ops:
            status, reason = "float", FALLBACK_REASON
        else:
            status, reason = "missing", "no op of this layer found in the flatbuffer"
        rows.append({"layer": scope, "kind": kind, "status": status, "lce_bconv2d": n_lce,
                     "float_ops": float_ops, "reason": reason})
    return rows


# -- conversion --------------------------------------------------------------------------------
def inference_saved_model(model, directory):
    """Write a SavedModel whose one serving signature is ``model(x, training=False)`` at batch
    1, traced once without autograph. (Keras' own SavedModel export, which
    ``lce.convert_keras_model`` uses, traces every layer in both modes with autograph: ~7x
    slower on the tiny test models, and the flatbuffer is the same.) Batch 1 is fixed, so the
    .tflite has static shapes (what benchmark_model and a device runtime want)."""
    module = tf.Module()
    module.variables_ = list(model.variables)  # tracked: the signature captures them
    spec = tf.TensorSpec([1] + list(model.input_shape[1:]), tf.float32,
                         name=model.input_names[0])
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                     autograph=False)
    module.serve = fn
    tf.saved_model.save(module, directory, signatures=fn.get_concrete_function())


def convert(model, flavor, representative=None, audio_input=False):
    """Keras model -> .tflite bytes (lce: LCE converter; float / int8: TFLiteConverter)."""
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        inference_saved_model(model, directory)
        if flavor == "lce":
            import larq_compute_engine as lce
            return lce.convert_saved_model(directory)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if flavor == "int8":
            if representative is None:
                raise ExportError("int8 needs representative data")

            def gen():
                for x in representative:
                    yield [x[None].astype(np.float32)]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = gen
            if audio_input:  # no int8 RFFT2D: float PCM in, float front end, int8 after it
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                       tf.lite.OpsSet.TFLITE_BUILTINS]
            else:
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        return converter.convert()


def io_details(flatbuffer):
    from pipeline.model_verify import verify_model
    verify_model(flatbuffer, "the exported model")  # what we wrote, before an interpreter
    from models.lce_census import has_own_ops
    if has_own_ops(flatbuffer):
        from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
        it = InterpreterWithCustomOps(model_content=flatbuffer,
                                      custom_op_registerers=ops.registerers())
    else:
        it = tf.lite.Interpreter(model_content=flatbuffer)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def q(d):
        scale, zero = d["quantization"]
        return {"scale": float(scale), "zero_point": int(zero)} if scale else None

    return {"input_shape": [int(v) for v in inp["shape"]], "input_dtype": inp["dtype"].__name__,
            "input_quantization": q(inp), "output_shape": [int(v) for v in out["shape"]],
            "output_dtype": out["dtype"].__name__, "output_quantization": q(out)}


# -- data --------------------------------------------------------------------------------------
def clips(pipe, split, n, batch=256):
    """First ``n`` clips of ``split``: (audio [n, 16000], features [n, 32, 32], labels)."""
    from pipeline.features import log_mel
    audio, labels = [], []
    got = 0
    for a, y in pipe.eval_audio(split, batch):
        audio.append(a.numpy())
        labels.append(y.numpy())
        got += len(a)
        if got >= n:
            break
    if not audio:
        raise DataError(f"no clips in the {split} split")
    audio = np.concatenate(audio)[:n].astype(np.float32)
    feats = np.concatenate([log_mel(audio[i:i + batch]).numpy()
                            for i in range(0, len(audio), batch)])
    return audio, feats, np.concatenate(labels)[:n]


def keras_logits(model, x, batch=256):
    fn = tf.function(lambda v: model(v, training=False))
    return np.concatenate([fn(tf.constant(x[i:i + batch])).numpy()
                           for i in range(0, len(x), batch)])


def agreement(ref, got, labels=None):
    diff = np.abs(ref - got)
    res = {"clips": int(len(ref)),
           "top1_agreement": float(np.mean(ref.argmax(-1) == got.argmax(-1))),
           "max_abs_logit_diff": float(diff.max()),
           "mean_abs_logit_diff": float(diff.mean()),
           "logit_scale": float(np.abs(ref).max()),
           "max_rel_logit_diff": float(diff.max() / max(1.0, np.abs(ref).max())),
           "clips_with_rel_diff_over_1e-3": int(np.sum(
               diff.max(-1) > 1e-3 * max(1.0, np.abs(ref).max())))}
    if labels is not None:
        res["keras_accuracy"] = float(np.mean(ref.argmax(-1) == labels))
        res["tflite_accuracy"] = float(np.mean(got.argmax(-1) == labels))
    return res


# -- one export --------------------------------------------------------------------------------
def export_name(model_name, flavor, depth, audio_input):
    return f"{model_name}_{flavor}_d{depth}" + ("_pcm" if audio_input else "")


def _versions():
    import larq
    import larq_compute_engine as lce
    return {"tensorflow": tf.__version__, "larq": larq.__version__,
            "larq_compute_engine": lce.__version__}


def export_description(spec, flavor, depth, audio_input):
    """The description the .tflite carries in its metadata (``pipeline.tflite_metadata``):
    class names, input kind, features (model.json's), architecture, depth, flavor."""
    return tflite_metadata.describe(spec["labels"], "audio" if audio_input else "features",
                                    spec["model"], depth, flavor, spec["model_kwargs"],
                                    spec.get("features"))


def export_one(checkpoint, flavor, depth, out_dir, pipe, cfg, data, audio_input=False,
               overrides=None, force=False, test_accuracy=True, min_agreement=None,
               representative=None, reference=None, spec=None):
    """Convert, describe, census, verify, write. Returns the report dict (``written`` tells
    whether the .tflite was written). ``data`` = (audio, features, labels) of the verification
    clips; ``spec``: the checkpoint's model.json if already read."""
    t0 = time.time()
    base, spec = load_keras(checkpoint, depth, overrides, spec)
    binary = is_binary(base)
    if flavor in BINARY_FLAVORS and not binary:
        raise ExportError(f"{checkpoint} is a full-precision model ({spec['model']}): the "
                          f"{flavor} flavor is for the binary student; use --flavor float,int8")
    if flavor in ("bdfsmn", "binary") and audio_input:
        raise ExportError(f"the {flavor} flavor takes features input only (no --audio_input)")
    from models.streaming import is_streaming_arch
    if flavor in ("bdfsmn", "binary") and is_streaming_arch(base):
        raise ExportError(f"{spec['model']} is a streaming model: its front end (causal, "
                          "receptive-field scale) is not what the " + flavor + " flavor "
                          "builds; export it with --flavor lce (and --streaming)")
    if flavor in ("float", "int8") and binary:
        raise ExportError(f"{checkpoint} is a binary model ({spec['model']}): float / int8 are "
                          "the baselines of the full-precision teacher (pass --teacher)")
    model = with_audio_front_end(base) if audio_input else base
    name = export_name(spec["model"], flavor, depth, audio_input)
    print(f"== {name}: converting ({flavor}) ...", flush=True)
    bd_layers = None
    if flavor == "bdfsmn":
        from pipeline import bdfsmn
        flatbuffer, bd_layers = bdfsmn.build(base, depth, spec)
    elif flavor == "binary":  # LCE output, each DFSMN layer one ops.BDFSMN
        from pipeline import binary_artifact
        flatbuffer, bd_layers = binary_artifact.build(base, depth, spec)
    else:
        flatbuffer = convert(model, flavor, representative, audio_input)
    description = export_description(spec, flavor, depth, audio_input)
    flatbuffer = tflite_metadata.write(flatbuffer, description)  # every flavor describes itself
    t_convert = time.time() - t0

    census = op_census(flatbuffer)
    num_layers = spec["model_kwargs"].get("num_layers", 8)
    if flavor == "bdfsmn":
        layers = bdfsmn_layer_report(base, flatbuffer, depth, num_layers)
    elif flavor == "binary":
        layers = binary_artifact_layer_report(base, flatbuffer, depth, num_layers)
    else:
        layers = binary_layer_report(base, flatbuffer, depth, num_layers) if binary else []
    report = {
        "name": name, "file": f"{name}.tflite", "written": False, "forced": False,
        "labels": list(spec["labels"]), "input": "audio" if audio_input else "features",
        "flavor": flavor, "depth": depth, "model": spec["model"],
        "model_kwargs": spec["model_kwargs"], "checkpoint": os.path.abspath(checkpoint),
        "converter": ("larq_compute_engine.convert_saved_model" if flavor == "lce" else
                      f"tf.lite.TFLiteConverter (front end, classifier) + {ops.BDFSMN} "
                      "spliced with schema_py_generated" if flavor == "bdfsmn" else
                      "larq_compute_engine.convert_saved_model + every DFSMN layer one "
                      f"{ops.BDFSMN} (pipeline.binary_artifact, schema_py_generated)"
                      if flavor == "binary" else
                      "tf.lite.TFLiteConverter" + (" (PTQ int8)" if flavor == "int8" else "")),
        **io_details(flatbuffer),
        "file_bytes": len(flatbuffer), "sha256": model_contract.sha256(flatbuffer),
        "weight_bytes": constant_bytes(flatbuffer),
        "op_census": dict(sorted(census.items(), key=lambda kv: -kv[1])),
        "num_ops": int(sum(census.values())), "binary_layers": layers,
        "description": description,
        "versions": _versions(), "convert_seconds": round(t_convert, 1),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if flavor == "bdfsmn":
        from pipeline import bdfsmn
        from models.lce_census import _BUILTIN_NAMES
        builtin = set(_BUILTIN_NAMES.values())
        others = sorted(n for n in census if n != ops.BDFSMN and n not in builtin)
        active = [j for j in models.layer_set(models.depth_index(depth, num_layers), num_layers)]
        packed = bdfsmn.packed_bytes(bd_layers)
        fl = bdfsmn.float_weight_bytes(bd_layers)
        report["bdfsmn"] = {
            ops.BDFSMN: int(census.get(ops.BDFSMN, 0)), "layers": len(active),
            "layer_indices": active, "other_custom_ops": others,
            "builtin_only_otherwise": not others,
            "backbone_weight_bytes": {
                "packed": packed, "float32_weights": fl,
                "ratio_total": round(fl / packed["total"], 2),
                "ratio_weights_only": round(fl / packed["bit_weights"], 2)},
        }
    if flavor == "binary":
        from pipeline import bdfsmn, binary_artifact
        bd = binary_artifact.byte_breakdown(flatbuffer)
        report["binary"] = {**binary_artifact.census_check(flatbuffer, depth),
                            "backbone_weight_bytes": bdfsmn.packed_bytes(bd_layers),
                            "bytes": {k: v for k, v in bd.items() if k != "constant_tensors"},
                            "constant_tensors": bd["constant_tensors"]}
    if flavor == "int8" and audio_input:
        report["note"] = ("front end (RFFT2D) stays float: float32 PCM input, int8 after the "
                          "log-mel, float32 output")
    if reference:
        report["storage_reference"] = reference
        report["storage_saving_vs_float"] = round(reference["bytes"] / len(flatbuffer), 3)
    elif flavor == "float":
        report["storage_reference"] = {"name": name, "bytes": len(flatbuffer)}
        report["storage_saving_vs_float"] = 1.0
    else:
        report["storage_reference"], report["storage_saving_vs_float"] = None, None

    # -- verification: stage the file (it describes itself: no sidecar needed to run it), run
    # it, then move it into place
    staged, staging = stage(flatbuffer, name, out_dir)

    audio, feats, labels = data
    runtime = "lce" if flavor == "lce" else "tf"  # bdfsmn: tf + the op library (auto)
    runner = predictors.TFLiteRunner(staged, runtime=runtime)
    ref = keras_logits(base, feats)
    got = runner(audio if audio_input else feats)
    ver = agreement(ref, got, labels)
    threshold = min_agreement if min_agreement is not None else MIN_AGREEMENT[flavor]
    ver.update({"split": "validation", "runtime": runner.runtime, "min_agreement": threshold,
                "reference": "Keras model on pipeline features" + (
                    " (tflite gets the raw PCM)" if audio_input else "")})
    checks = {"top1_agreement": ver["top1_agreement"] >= threshold}
    if flavor == "lce":
        convs = [r for r in layers if r["kind"] == "conv"]
        report["binary_convs_lowered"] = bool(convs) and all(
            r["status"] == ops.BCONV2D for r in convs)
        checks["binary_convs_lowered"] = report["binary_convs_lowered"]
    if flavor == "bdfsmn":
        b = report["bdfsmn"]
        checks[f"one_{ops.BDFSMN}_per_layer"] = (b[ops.BDFSMN] == b["layers"] and all(
            r["status"] == ops.BDFSMN for r in layers if r["layer"].startswith("dfsmn/")))
        checks["builtin_only_otherwise"] = b["builtin_only_otherwise"]
    if flavor == "binary":
        b = report["binary"]
        for k in (f"one_{ops.BDFSMN}_per_layer", "float_weight_ops_only_conv1_classifier",
                  "custom_ops_known"):
            checks[k] = b[k]
    ver["checks"] = checks
    ver["passed"] = all(checks.values())
    report["verification"] = ver
    print(f"   verification: agreement {ver['top1_agreement']:.4f} (>= {threshold}), "
          f"max |dlogit| {ver['max_abs_logit_diff']:.3g}, checks {checks}", flush=True)

    return publish_staged(report, staged, staging, name, out_dir, cfg, force, test_accuracy, t0)


# -- reports -----------------------------------------------------------------------------------
def _kb(n):
    return f"{n / 1024:,.1f} KiB" if n is not None else "-"


def format_markdown(r):
    v = r["verification"]
    status = ("written" + (" (FORCED: verification failed)" if r["forced"] else "")
              if r["written"] else "REFUSED: verification failed, no .tflite written "
              "(--force overrides)")
    lines = [f"# {r['name']}", "",
             f"- status: **{status}**",
             f"- flavor: {r['flavor']} ({r['converter']}), depth {r['depth']}, model "
             f"{r['model']}, input {r['input']} {r['input_shape']} {r['input_dtype']}, output "
             f"{r['output_shape']} {r['output_dtype']}",
             f"- checkpoint: {r['checkpoint']}",
             f"- labels: {', '.join(r['labels'])}"]
    if r.get("description"):
        d = r["description"]
        lines.append(f"- self-describing: metadata `{tflite_metadata.KEY}` ({d['format']}: "
                     f"labels, input {d['input']}, {d['features']['kind']} features at "
                     f"{d['sample_rate']} Hz, {d['arch']} depth {d['depth']} {d['flavor']}, "
                     f"version {d['version']})")
    if r["input_quantization"] or r["output_quantization"]:
        lines.append(f"- quantization: input {r['input_quantization']}, output "
                     f"{r['output_quantization']} (real = scale * (q - zero_point))")
    if r.get("note"):
        lines.append(f"- note: {r['note']}")
    w = r["weight_bytes"]
    saving = r["storage_saving_vs_float"]
    lines += ["", "## Size", "",
              f"- file: {r['file_bytes']:,} B ({_kb(r['file_bytes'])})",
              f"- constant (weight) buffers: {w['total']:,} B: binary filters "
              f"{w['binary_filters']:,} B, float conv/dense kernels {w['float_weights']:,} B, "
              f"other {w['other']:,} B",
              "- storage saving vs float teacher .tflite: " +
              (f"**{saving:.2f}x** (reference {r['storage_reference']['name']}, "
               f"{r['storage_reference']['bytes']:,} B)" if saving else
               "(no float teacher export of this depth in this folder; export it or pass "
               "--teacher)"),
              "", "## Op census", "",
              f"{r['num_ops']} ops: {format_census(r['op_census'])}"]
    if r.get("bdfsmn"):
        b = r["bdfsmn"]
        wb = b["backbone_weight_bytes"]
        lines += ["", f"## Bitwise DFSMN layers ({ops.BDFSMN})", "",
                  f"- {b[ops.BDFSMN]} {ops.BDFSMN} ops for {b['layers']} layers "
                  f"{b['layer_indices']}; other custom ops: {b['other_custom_ops'] or 'none'}",
                  f"- backbone weight storage: packed {wb['packed']['total']:,} B (bit words "
                  f"{wb['packed']['bit_weights']:,} B + per-channel vectors "
                  f"{wb['packed']['per_channel_vectors']:,} B) vs float32 weights "
                  f"{wb['float32_weights']:,} B: **{wb['ratio_total']}x** smaller "
                  f"({wb['ratio_weights_only']}x for the weight matrices alone)"]
    if r.get("binary"):  # the binary flavor: where the file's bytes go
        b = r["binary"]["bytes"]
        lines += ["", "## Where the bytes go", "", "| part | bytes |", "|---|---:|"]
        lines += [f"| constants: {k} | {v:,} |" for k, v in b["constants_by_role"].items()]
        lines += [f"| metadata buffers | {b['metadata_buffers']:,} |",
                  f"| flatbuffer tables ({b['tensors']} tensors, {b['tensor_name_bytes']:,} B "
                  f"of names; {b['ops']} ops, {b['buffers']} buffers) and alignment | "
                  f"{b['structure_and_padding']:,} |",
                  f"| **file** | **{b['file_bytes']:,}** |",
                  "", "Per tensor: `binary.constant_tensors` in the JSON report."]
    if r["binary_layers"]:
        lines += ["", "## Binary layers", "", "| layer | became | reason |", "|---|---|---|"]
        lines += [f"| {b['layer']} | {b['status']}"
                  f"{' x' + str(b['lce_bconv2d']) if b['lce_bconv2d'] else ''} | {b['reason']} |"
                  for b in r["binary_layers"]]
    elif r["flavor"] not in BINARY_FLAVORS:
        lines += ["", "No binary layers (full-precision teacher)."]
    lines += ["", "## Verification", "",
              f"- {v['clips']} {v['split']} clips, {v['runtime']} interpreter vs "
              f"{v['reference']}",
              f"- top-1 agreement **{v['top1_agreement']:.4f}** (threshold {v['min_agreement']})"
              f"; max |logit diff| {v['max_abs_logit_diff']:.3g} (logit scale "
              f"{v['logit_scale']:.3g}; {v['clips_with_rel_diff_over_1e-3']} clips above 1e-3 "
              "relative)",
              f"- accuracy on these clips: Keras {v.get('keras_accuracy', float('nan')):.4f}, "
              f"tflite {v.get('tflite_accuracy', float('nan')):.4f}",
              f"- checks: {v['checks']} -> **{'PASSED' if v['passed'] else 'FAILED'}**"]
    t = r["test_accuracy"]
    if t and "accuracy" in t:
        lines.append(f"- test split accuracy of the .tflite: **{t['accuracy']:.4f}** "
                     f"(n={t['n']})")
    elif t:
        lines.append(f"- test split: skipped ({t['skipped']})")
    return "\n".join(lines) + "\n"


def write_report(report, out_dir):
    """<name>.json (the report, which is also the sidecar: labels, input, sha256 of the model
    bytes that pipeline.predictors checks) and <name>.md; the JSON written atomically."""
    checkpoints.atomic_write_json(os.path.join(out_dir, f"{report['name']}.json"), report,
                                  indent=2)
    with open(os.path.join(out_dir, f"{report['name']}.md"), "w") as f:
        f.write(format_markdown(report))


def refresh_reports(out_dir):
    """Bring the reports of ``out_dir`` in line with its .tflite files after they changed size
    (``python -m pipeline.tflite_metadata --stamp`` adds the description to older exports):
    each report's ``file_bytes`` and ``sha256``, the storage savings against the float export of
    the same depth and input in the folder, its .md, and exports.json / .md. Returns the
    refreshed reports."""
    reports = []
    for name in sorted(load_index(out_dir)["exports"]):
        path = os.path.join(out_dir, f"{name}.json")
        tfl = os.path.join(out_dir, f"{name}.tflite")
        if not (os.path.exists(path) and os.path.exists(tfl)):
            continue
        with open(path) as f:
            r = json.load(f)
        with open(tfl, "rb") as f:
            data = f.read()
        r["file_bytes"], r["sha256"] = len(data), model_contract.sha256(data)
        reports.append(r)
    floats = {(r["depth"], r["input"]): r for r in reports
              if r["flavor"] == "float" and not r.get("streaming")}
    for r in reports:
        ref = floats.get((r["depth"], r["input"]))
        old = r.get("storage_reference") or {}
        if ref is not None and old.get("name", ref["name"]) == ref["name"]:
            r["storage_reference"] = {"name": ref["name"], "bytes": ref["file_bytes"]}
            r["storage_saving_vs_float"] = round(ref["file_bytes"] / r["file_bytes"], 3)
        write_report(r, out_dir)
    update_index(out_dir, reports)
    return reports


def load_index(out_dir):
    path = os.path.join(out_dir, INDEX_JSON)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"exports": {}}


def float_reference(index, depth, input_kind):
    for e in index["exports"].values():
        if (e["flavor"] == "float" and e["depth"] == depth and e["input"] == input_kind
                and e["written"] and not e.get("streaming")):
            return {"name": e["name"], "bytes": e["file_bytes"]}
    return None


def update_index(out_dir, reports):
    index = load_index(out_dir)
    for r in reports:
        t = r["test_accuracy"] or {}
        index["exports"][r["name"]] = {
            k: r[k] for k in ("name", "file", "written", "forced", "flavor", "depth", "input",
                              "model", "file_bytes", "storage_saving_vs_float", "num_ops",
                              "checkpoint")}
        e = index["exports"][r["name"]]
        e["streaming"] = bool(r.get("streaming"))  # one hop per invoke (streaming_export)
        e.update({"lce_bconv2d": r["op_census"].get(ops.BCONV2D, 0),
                  "lce_bdfsmn": r["op_census"].get(ops.BDFSMN, 0),
                  "weight_bytes": r["weight_bytes"]["total"],
                  "top1_agreement": r["verification"]["top1_agreement"],
                  "max_abs_logit_diff": r["verification"]["max_abs_logit_diff"],
                  "verified": r["verification"]["passed"],
                  "test_accuracy": t.get("accuracy")})
    # savings of exports written before their float reference existed
    for e in index["exports"].values():
        if e["storage_saving_vs_float"] is None:
            ref = float_reference(index, e["depth"], e["input"])
            if ref:
                e["storage_saving_vs_float"] = round(ref["bytes"] / e["file_bytes"], 3)
                e["storage_reference"] = ref["name"]
    index["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
    with open(os.path.join(out_dir, INDEX_JSON), "w") as f:
        json.dump(index, f, indent=2)
    rows = sorted(index["exports"].values(), key=lambda e: (e["flavor"], -e["depth"], e["name"]))
    lines = ["# Exports", "",
             f"| export | flavor | depth | input | file | saving vs float | {ops.BCONV2D} | "
             "agreement | max abs dlogit | test acc | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in rows:
        status = ("forced" if e["forced"] else "ok") if e["written"] else "REFUSED"
        saving = f"{e['storage_saving_vs_float']:.2f}x" if e["storage_saving_vs_float"] else "-"
        acc = f"{e['test_accuracy']:.4f}" if e["test_accuracy"] is not None else "-"
        lines.append(f"| [{e['name']}]({e['name']}.md) | {e['flavor']} | {e['depth']} | "
                     f"{e['input']} | {e['file_bytes']:,} B | {saving} | {e['lce_bconv2d']} | "
                     f"{e['top1_agreement']:.4f} | {e['max_abs_logit_diff']:.3g} | {acc} | "
                     f"{status} |")
    lines += ["", "Saving: float teacher .tflite of the same depth and input / this file. "
              "Agreement: top-1 of the .tflite vs the Keras model on validation clips."]
    with open(os.path.join(out_dir, INDEX_MD), "w") as f:
        f.write("\n".join(lines) + "\n")
    return index


# -- the whole run -----------------------------------------------------------------------------
def run(checkpoint, out_dir, cfg, depths=None, flavors=None, teacher=None, audio_input=False,
        force=False, verify_clips=500, test_accuracy=True, representative_clips=200,
        min_agreement=None, overrides=None, streaming=False, hop_frames=4):
    """Export every (checkpoint, flavor, depth) requested; returns the list of reports. Each
    run directory's model.json is read once (``specs``) and handed to every export of it.
    ``streaming``: one hop of ``hop_frames`` feature frames per invoke
    (``pipeline.streaming_export``; float, lce and binary)."""
    if not streaming and hop_frames != 4:
        raise ExportError("--hop_frames is the hop of a --streaming export")
    spec = checkpoints.read_model_json(checkpoint)
    specs = {checkpoint: spec}
    trained = sorted(spec.get("training_depths") or [spec["model_kwargs"].get("num_layers", 8)],
                     reverse=True)
    binary = is_binary_name(spec["model"])
    if flavors is None:
        flavors = ["lce"] if binary else (["float"] if streaming else ["float", "int8"])
    if streaming:
        from pipeline import streaming_export
        bad = [fl for fl in flavors if fl not in streaming_export.FLAVORS]
        if bad:
            raise ExportError(f"--streaming exports the flavors {streaming_export.FLAVORS} "
                              f"(float: the teacher, lce: the binary student); got {bad}")
    for fl in flavors:
        if fl not in FLAVORS:
            raise ExportError(f"unknown flavor {fl!r}; choose from {FLAVORS}")
    teacher_dir = checkpoint if not binary else teacher
    if any(fl in ("float", "int8") for fl in flavors) and not teacher_dir:
        raise ExportError("float / int8 are baselines of the full-precision teacher: pass the "
                          "teacher run directory as --teacher (or as --model)")
    for fl in BINARY_FLAVORS:
        if fl in flavors and not binary:
            raise ExportError(f"{checkpoint} is the full-precision {spec['model']}: the {fl} "
                              "flavor needs the binary student")

    os.makedirs(out_dir, exist_ok=True)
    index = index_from_config(cfg, labels=spec["labels"])
    pipe = InputPipeline(index, cfg)
    if not verify_clips or verify_clips <= 0:
        raise ExportError("--verify_clips must be > 0 (verification decides whether the "
                          ".tflite is written)")
    data = clips(pipe, "validation", verify_clips)
    rep = None
    if "int8" in flavors:
        a, f, _ = clips(pipe, "training", representative_clips)
        rep = a if audio_input else f

    jobs = []  # (checkpoint, flavor, depth): float first, so lce/int8 find their reference
    for fl in sorted(flavors, key=lambda v: {"float": 0, "int8": 1, "lce": 2, "bdfsmn": 3,
                                                  "binary": 4}[v]):
        if fl in BINARY_FLAVORS:
            ds = [int(d) for d in depths] if depths else trained
            jobs += [(checkpoint, fl, d) for d in ds]
        else:
            if teacher_dir not in specs:
                specs[teacher_dir] = checkpoints.read_model_json(teacher_dir)
            t_spec = specs[teacher_dir]
            t_trained = sorted(t_spec.get("training_depths") or [8], reverse=True)
            ds = [int(d) for d in depths] if depths else t_trained[:1]
            jobs += [(teacher_dir, fl, d) for d in ds]

    reports = []
    for ckpt, fl, d in jobs:
        if streaming:
            reports.append(streaming_export.export_one(
                ckpt, fl, d, out_dir, cfg, data, audio_input,
                overrides if ckpt == checkpoint else None, force, test_accuracy,
                min_agreement, spec=specs[ckpt], hop_frames=hop_frames))
            continue
        ref = None
        if fl != "float":
            ref = float_reference(update_index(out_dir, reports) if reports else
                                  load_index(out_dir), d, "audio" if audio_input else "features")
            if ref is None and teacher_dir:
                if teacher_dir not in specs:
                    specs[teacher_dir] = checkpoints.read_model_json(teacher_dir)
                t_model, t_spec = load_keras(teacher_dir, d, spec=specs[teacher_dir])
                fb = tflite_metadata.write(  # as the float export would be: described
                    convert(with_audio_front_end(t_model) if audio_input else t_model, "float"),
                    export_description(t_spec, "float", d, audio_input))
                ref = {"name": export_name(t_spec["model"], "float", d, audio_input) +
                       " (converted for size only)", "bytes": len(fb)}
        reports.append(export_one(ckpt, fl, d, out_dir, pipe, cfg, data, audio_input,
                                  overrides if ckpt == checkpoint else None, force,
                                  test_accuracy, min_agreement, rep, ref, spec=specs[ckpt]))
    update_index(out_dir, reports)
    return reports


def model_and_arch():
    """--model and --arch, also from the old spellings: ``--checkpoint DIR --model NAME`` (the
    old --model was the registry-name check that --arch is now)."""
    model, arch = FLAGS.model, FLAGS.arch
    if model and model in models.list_models() and not os.path.exists(model):
        cli_vocabulary.warn_deprecated("model", "arch", " as a registry name here")
        arch = arch or model
        given = FLAGS["checkpoint"].given if "checkpoint" in FLAGS else []
        model = given[-1] if given else None
    return model, arch


def main(argv):
    del argv
    model, arch = model_and_arch()
    if not model or not FLAGS.out_dir:
        raise app.UsageError("--model (a run directory of pipeline.train) and --out_dir are "
                             "required")
    overrides = {"model": arch, **{k: FLAGS[k].value for k in SIZE_FLAGS}}
    output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    output_paths.check_dir(FLAGS.cache_dir, "--cache_dir")
    cfg = data_flags.config_from_flags()
    reports = run(model, FLAGS.out_dir, cfg, FLAGS.depth, FLAGS.flavor,
                  FLAGS.teacher, FLAGS.audio_input, FLAGS.force, FLAGS.verify_clips,
                  FLAGS.test_accuracy, FLAGS.representative_clips, FLAGS.min_agreement,
                  overrides, FLAGS.streaming, FLAGS.hop_frames)
    print()
    with open(os.path.join(FLAGS.out_dir, INDEX_MD)) as f:
        print(f.read())
    failed = [r["name"] for r in reports if not r["verification"]["passed"]]
    summary = {r["name"]: {"written": r["written"], "file_bytes": r["file_bytes"],
                           "top1_agreement": r["verification"]["top1_agreement"],
                           "passed": r["verification"]["passed"]} for r in reports}
    print(json.dumps(summary))
    result = {"exports": summary, "reports": reports}
    if failed and not FLAGS.force:
        cli.write_json_out(result)
        print(f"verification FAILED for {failed}: no .tflite written for them (see their "
              ".md reports; --force writes them anyway)", file=sys.stderr)
        sys.exit(1)
    return result  # --json_out


def stage(flatbuffer: bytes, name: str, out_dir: str):
    """The start of every export's verification (windowed and streaming): the file written to
    OUT_DIR/.staging/<name>.tflite, where it is run before `publish_staged` moves it into place.
    Returns (staged file, staging folder)."""
    staging = os.path.join(out_dir, ".staging")
    os.makedirs(staging, exist_ok=True)
    staged = os.path.join(staging, f"{name}.tflite")
    with open(staged, "wb") as f:
        f.write(flatbuffer)
    return staged, staging


def publish_staged(report, staged, staging, name, out_dir, cfg, force, test_accuracy, t0):
    """The end of every export (windowed and streaming): a verified (or --force'd) staged file
    is scored on the test split (optional) and moved to OUT_DIR/<name>.tflite, a failed one is
    dropped; the report is written either way."""
    ver = report["verification"]
    report["test_accuracy"] = None
    if ver["passed"] or force:
        if test_accuracy:
            from pipeline import evaluate
            try:
                res = next(iter(evaluate.run(staged, cfg, "testing", plot=False).values()))
                report["test_accuracy"] = {"accuracy": res["accuracy"], "n": res["n"],
                                           "per_class": res["per_class"]}
            except DataError as e:
                report["test_accuracy"] = {"skipped": str(e)}
        shutil.move(staged, os.path.join(out_dir, f"{name}.tflite"))
        report["written"] = True
        report["forced"] = not ver["passed"]
    else:
        report["file"] = None
        os.remove(staged)
    if not os.listdir(staging):
        os.rmdir(staging)
    report["seconds"] = round(time.time() - t0, 1)
    write_report(report, out_dir)
    return report


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(ExportError,))

