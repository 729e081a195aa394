"""Streaming export (issue 16): a .tflite that takes ONE hop per invoke and carries its state
explicitly, for the models of ``models/streaming.py`` (``dfsmn_stream``, ``bifsmnv2_stream``).

    python -m pipeline.export --model RUN_DIR --flavor float --streaming [--audio_input] ...
    python -m pipeline.export --model RUN_DIR --flavor lce --streaming [--audio_input] ...
    python -m pipeline.export --model RUN_DIR --flavor binary --streaming [--audio_input] ...

What is converted: ``models.streaming.StreamingDFSMN.step`` at one depth (with
``--audio_input`` preceded by ``pipeline.streaming_runner.log_mel_step``), traced once as a
SavedModel signature with the hop and every state as inputs and the logits and every new
state as outputs, then

* ``float`` (teacher): ``tf.lite.TFLiteConverter`` (builtins only: CONV_2D,
  DEPTHWISE_CONV_2D, CONCATENATION, STRIDED_SLICE, FULLY_CONNECTED...; RFFT2D with
  ``--audio_input``);
* ``lce`` (student): the LCE converter: the binary convs (conv2, linear, every pw1 / pw2)
  become LCE's binary conv op after its quantize op, the memory blocks float depthwise convs
  on the dual-scale activation, as in the windowed ``lce`` export;
* ``binary`` (student): the ``lce`` conversion with every dual-scale binarization (the
  converter's eight-op chain SUB / QUANTIZE / DEQUANTIZE / SUB / SUB / ABS / MEAN / QUANTIZE
  in front of each binary conv) one ``ops.DUAL_QUANTIZE``
  (``pipeline.binary_artifact.fuse_dual_quantize``; a DEQUANTIZE a memory block still reads
  stays).

The subgraph's inputs and outputs are put in the documented order (input 0 the hop, input
k + 1 state k; output 0 the logits, output k + 1 the new state k; ``pipeline.streaming_runner``)
by the signature's names, so a runtime without signature support (TFLite Micro, LCE's
interpreter) can run it positionally. State is explicit (no resource variables: the project's
verifier refuses them, and TFLite Micro runs explicit state tensors as plain inputs/outputs).

Why not ``ops.BDFSMN`` (the ``bdfsmn`` / ``binary`` flavors): the op takes a whole window
[T, C] and zero-pads its memory block's taps inside; a streaming version needs one more
input and output per op, the memory state [left * dilation, C] of past dual-scale activations
(the op's ``a``, float32), read as the frames before x and written with the last left *
dilation frames of [state, a], with right = 0 (no look-ahead) and T = 1 per invoke; its
options would gain ``streaming`` (int 0/1) so that a windowed op keeps today's contract.
Until the op has that, the binary streaming exports use LCE's converter ops plus builtins
(``lce``), with the project's fused dual-scale binarization (``binary``).

Verification (as ``pipeline.export``): the .tflite fed hop by hop, each validation clip from
reset (``streaming_runner.clip_hops``), against the Keras non-streaming model on the same
clips' features: top-1 agreement at the flavor's threshold, |logit difference| reported;
lce: every binary conv lowered. The export's name ends in ``_streaming``; its description
(``bkws.description``) carries the ``streaming`` entry (hop, states, order).
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import time

import numpy as np

from lce_kernels import ops
from pipeline import export, model_contract, predictors, streaming_runner, tflite_metadata

import tensorflow as tf  # noqa: E402  (after `models`, which pipeline.export imports: Keras 2)

FLAVORS = ("float", "lce", "binary")
SUFFIX = "_streaming"
#: feature frames per invoke by default: one backbone frame (128 ms)
DEFAULT_HOP_FRAMES = 4


class StreamingExportError(export.ExportError):
    """A streaming export that cannot be made (not a streaming model, wrong flavor...)."""


def export_name(model_name, flavor, depth, audio_input, hop_frames=DEFAULT_HOP_FRAMES):
    """``<windowed name>_streaming``, plus ``_hop<frames>`` for a hop other than the default."""
    return export.export_name(model_name, flavor, depth, audio_input) + SUFFIX + (
        "" if hop_frames == DEFAULT_HOP_FRAMES else f"_hop{hop_frames}")


def step_function(model, audio_input=False, cfg=None, hop_frames=DEFAULT_HOP_FRAMES):
    """(tf.function with a fixed signature, state specs [(name, shape)], input name): one hop
    of ``hop_frames`` feature frames of ``model`` (a single-depth ``build_dfsmn_stream``
    model), optionally from audio."""
    from models.streaming import StreamingDFSMN
    geometry = streaming_runner.StreamGeometry.from_config(cfg, hop_frames)
    stream = StreamingDFSMN(model, hop_frames=hop_frames)
    specs = list(stream.state_specs)
    if audio_input:
        specs = [("audio", (geometry.audio_state,))] + specs
        x_spec = tf.TensorSpec([1, geometry.hop_samples], tf.float32, name="audio")
    else:
        x_spec = tf.TensorSpec([1, geometry.hop_frames, stream.mels], tf.float32,
                               name="features")
    state_specs = [tf.TensorSpec((1,) + tuple(shape), tf.float32, name=f"state_{n}")
                   for n, shape in specs]

    def step(x, *states):
        st = list(states)
        if audio_input:
            x, audio_state = streaming_runner.log_mel_step(st.pop(0), x, cfg)
        logits, new = stream.step(x, st)
        if audio_input:
            new = [audio_state] + new
        return {"logits": logits,
                **{f"new_state_{n}": tf.identity(v, name=f"new_state_{n}")
                   for (n, _), v in zip(specs, new)}}

    fn = tf.function(step, input_signature=[x_spec] + state_specs, autograph=False)
    return fn, specs, x_spec.name


def order_io(flatbuffer: bytes, input_names, output_names) -> bytes:
    """Put subgraph 0's inputs / outputs in the given signature-name order (the documented
    positional contract); StreamingExportError when the signature does not name them all."""
    model = tflite_metadata.read_model(flatbuffer)
    sigs = model.signatureDefs or []
    if len(sigs) != 1:
        raise StreamingExportError(f"the converter wrote {len(sigs)} signatures; expected 1")

    def index(maps, names, what):
        by_name = {(m.name.decode() if isinstance(m.name, bytes) else m.name): m.tensorIndex
                   for m in maps}
        missing = [n for n in names if n not in by_name]
        if missing or len(by_name) != len(names):
            raise StreamingExportError(f"signature {what} {sorted(by_name)} do not match "
                                       f"{list(names)}")
        return [int(by_name[n]) for n in names]

    sg = model.subgraphs[0]
    ins = index(sigs[0].inputs, input_names, "inputs")
    outs = index(sigs[0].outputs, output_names, "outputs")
    if sorted(ins) != sorted(int(i) for i in sg.inputs) or \
            sorted(outs) != sorted(int(i) for i in sg.outputs):
        raise StreamingExportError("the signature's tensors are not the subgraph's inputs / "
                                   "outputs")
    sg.inputs, sg.outputs = np.array(ins, np.int32), np.array(outs, np.int32)
    return tflite_metadata.write_model(model)


def convert(model, flavor, audio_input=False, cfg=None, hop_frames=DEFAULT_HOP_FRAMES):
    """(.tflite bytes with the documented I/O order, state specs)."""
    fn, specs, x_name = step_function(model, audio_input, cfg, hop_frames)
    module = tf.Module()
    module.variables_ = list(model.variables)
    module.serve = fn
    with tempfile.TemporaryDirectory() as directory:
        tf.saved_model.save(module, directory, signatures=fn.get_concrete_function())
        if flavor in ("lce", "binary"):
            import larq_compute_engine as lce
            flatbuffer = lce.convert_saved_model(directory)
        else:
            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(directory).convert()
    names = [n for n, _ in specs]
    flatbuffer = order_io(flatbuffer, [x_name] + [f"state_{n}" for n in names],
                          ["logits"] + [f"new_state_{n}" for n in names])
    if flavor == "binary":
        flatbuffer = binary_stream_artifact(model, flatbuffer, hop_frames)
    return flatbuffer, specs


def binary_stream_artifact(model, lce_flatbuffer: bytes,
                           hop_frames=DEFAULT_HOP_FRAMES) -> bytes:
    """LCE's converter output of one hop -> the streaming binary artifact: every DFSMN layer's
    op chain (its state slice included) one ``ops.BDFSMN`` in its streaming form (state in,
    new state out: ``pipeline.binary_artifact.replace_stream_layer``), every remaining
    dual-scale binarization one ``ops.DUAL_QUANTIZE``, unused tensors / buffers dropped."""
    from models.streaming import StreamingDFSMN
    from pipeline import binary_artifact
    stream = StreamingDFSMN(model, hop_frames=hop_frames)
    bb = stream.backbone
    opts = ops.bdfsmn_options(bb.channels, bb.hidden, bb.left, 0, bb.dilation)
    m = tflite_metadata.read_model(lce_flatbuffer)
    for j in stream.layers:
        binary_artifact.replace_stream_layer(
            m, f"dfsmn/layer{j}", ops.bdfsmn_inputs(bb.blocks[j].folded_params(stream.depth_index)),
            opts)
    fused = binary_artifact.fuse_dual_quantize(m)
    binary_artifact.prune(m)
    m.description = (f"binary streaming: LCE converter output of one hop ({ops.BCONV2D} front "
                     f"end, its {fused} dual-scale binarizations each one {ops.DUAL_QUANTIZE}) "
                     f"with every DFSMN layer one {ops.BDFSMN} carrying its state")
    return tflite_metadata.write_model(m)


def export_one(checkpoint, flavor, depth, out_dir, cfg, data, audio_input=False,
               overrides=None, force=False, test_accuracy=True, min_agreement=None, spec=None,
               hop_frames=DEFAULT_HOP_FRAMES):
    """Convert, describe, census, verify hop by hop, write; the report (``pipeline.export``'s
    fields plus ``streaming``)."""
    from models.lce_census import constant_bytes, op_census
    from models.streaming import is_streaming_arch
    from pipeline.speech_commands import DataError
    t0 = time.time()
    if flavor not in FLAVORS:
        raise StreamingExportError(f"--streaming exports the flavors {FLAVORS} (float: the "
                                   f"teacher, lce / binary: the binary student); got "
                                   f"{flavor!r}")
    base, spec = export.load_keras(checkpoint, depth, overrides, spec)
    if not is_streaming_arch(base):
        raise StreamingExportError(
            f"{checkpoint} holds a {spec['model']!r} model: --streaming needs a model trained "
            "as a streaming architecture (--arch dfsmn_stream / bifsmnv2_stream, "
            "configs/real8_stream_*.flags)")
    binary = export.is_binary(base)
    if flavor in ("lce", "binary") and not binary:
        raise StreamingExportError(f"{checkpoint} is full precision ({spec['model']}): "
                                   "stream it with --flavor float")
    if flavor == "float" and binary:
        raise StreamingExportError(f"{checkpoint} is binary ({spec['model']}): stream it with "
                                   "--flavor lce or binary")
    name = export_name(spec["model"], flavor, depth, audio_input, hop_frames)
    print(f"== {name}: converting ({flavor}, one hop of {hop_frames} feature frames per "
          "invoke) ...", flush=True)
    features = getattr(cfg, "features", None)     # the data's FeatureConfig
    geometry = streaming_runner.StreamGeometry.from_config(features, hop_frames)
    if geometry.window_frames % hop_frames:
        raise StreamingExportError(f"--hop_frames {hop_frames} does not divide the "
                                   f"{geometry.window_frames}-frame window")
    flatbuffer, specs = convert(base, flavor, audio_input, features, hop_frames)
    description = export.export_description(spec, flavor, depth, audio_input)
    description[streaming_runner.KEY] = streaming_runner.streaming_description(
        specs, description["input"], geometry)
    flatbuffer = tflite_metadata.write(flatbuffer, description)
    t_convert = time.time() - t0

    census = op_census(flatbuffer)
    num_layers = spec["model_kwargs"].get("num_layers", 8)
    layers = (export.binary_artifact_layer_report(base, flatbuffer, depth, num_layers)
              if flavor == "binary" else
              export.binary_layer_report(base, flatbuffer, depth, num_layers) if binary else [])
    state = streaming_runner.states_summary(specs)
    report = {
        "name": name, "file": f"{name}.tflite", "written": False, "forced": False,
        "labels": list(spec["labels"]), "input": "audio" if audio_input else "features",
        "flavor": flavor, "streaming": True, "depth": depth, "model": spec["model"],
        "model_kwargs": spec["model_kwargs"], "checkpoint": os.path.abspath(checkpoint),
        "converter": ("larq_compute_engine.convert_saved_model" if flavor != "float" else
                      "tf.lite.TFLiteConverter") + " of StreamingDFSMN.step (one hop)"
                     + (f", every DFSMN layer one {ops.BDFSMN} with its state, dual-scale "
                        f"binarizations fused ({ops.DUAL_QUANTIZE})"
                        if flavor == "binary" else ""),
        **export.io_details(flatbuffer),
        "file_bytes": len(flatbuffer), "sha256": model_contract.sha256(flatbuffer),
        "weight_bytes": constant_bytes(flatbuffer),
        "op_census": dict(sorted(census.items(), key=lambda kv: -kv[1])),
        "num_ops": int(sum(census.values())), "binary_layers": layers,
        "description": description, "stream_state": state,
        "note": (f"streaming: one hop ({geometry.hop_samples} samples = {geometry.hop_ms:g} ms"
                 f" = {geometry.hop_frames} feature frames) per invoke; {state['states']} "
                 f"state tensors in and out ({state['bytes']:,} B), zeros at reset; input 0 "
                 "the hop, input k+1 state k, output 0 logits, output k+1 new state k"),
        "versions": export._versions(), "convert_seconds": round(t_convert, 1),  # noqa: SLF001
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "storage_reference": None, "storage_saving_vs_float": None,
    }

    staged, staging = export.stage(flatbuffer, name, out_dir)
    audio, feats, labels = data
    pred = predictors.load_predictor(staged)       # the streaming runner (description)
    ref = export.keras_logits(base, feats)
    got = pred.predict(audio if audio_input else feats)
    ver = export.agreement(ref, got, labels)
    threshold = min_agreement if min_agreement is not None else export.MIN_AGREEMENT[flavor]
    ver.update({"split": "validation", "runtime": pred.runtime + " (hop by hop)",
                "min_agreement": threshold, "invokes": pred.streaming.invokes,
                "reference": "Keras non-streaming model on pipeline features, each clip fed "
                             "hop by hop from reset" + (" (the .tflite gets the reflect-"
                                                        "padded PCM)" if audio_input else "")})
    checks = {"top1_agreement": ver["top1_agreement"] >= threshold}
    if flavor in ("lce", "binary"):
        # lce: every binary conv one ops.BCONV2D; binary: the front end's, and every DFSMN
        # layer one ops.BDFSMN in its streaming form (the report's status words)
        convs = [r for r in layers if r["kind"] == "conv" or (
            flavor == "binary" and r["layer"].startswith("dfsmn/"))]
        report["binary_convs_lowered"] = bool(convs) and all(
            r["status"] == (ops.BDFSMN if flavor == "binary" and r["layer"].startswith("dfsmn/")
                            else ops.BCONV2D) for r in convs)
        checks["binary_convs_lowered"] = report["binary_convs_lowered"]
    if flavor == "binary":
        from pipeline import binary_artifact
        bd = binary_artifact.byte_breakdown(flatbuffer)
        report["binary"] = {**binary_artifact.census_check(flatbuffer, depth),
                            "bytes": {k: v for k, v in bd.items() if k != "constant_tensors"},
                            "constant_tensors": bd["constant_tensors"]}
        checks[f"one_{ops.BDFSMN}_per_layer"] = report["binary"][f"one_{ops.BDFSMN}_per_layer"]
    ver["checks"] = checks
    ver["passed"] = all(checks.values())
    report["verification"] = ver
    print(f"   verification (hop by hop): agreement {ver['top1_agreement']:.4f} (>= "
          f"{threshold}), max |dlogit| {ver['max_abs_logit_diff']:.3g}, checks {checks}",
          flush=True)

    return export.publish_staged(report, staged, staging, name, out_dir, cfg, force,
                                 test_accuracy, t0)
