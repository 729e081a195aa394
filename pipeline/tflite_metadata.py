"""Self-describing models: the description every exported .tflite carries in its own metadata.

Reads: --models (.tflite files; with --stamp also each one's sidecar JSON and the model.json
  of the checkpoint it names).
Writes: prints each file's description (and --json_out); with --stamp the files and their
  sidecars (sha256, file_bytes, description) in place.

A ``.tflite`` copied alone to a device or another folder must still say what it is: its class
names, what it takes as input and how that input is computed from audio. The TFLite schema
has a place for it: ``Model.metadata``, a list of named entries each pointing to a buffer.
This module writes, reads and validates ONE entry, named ``bkws.description`` (``KEY``), whose
buffer holds UTF-8 JSON:

    {"format": "bkws.description/1",
     "labels": ["_silence_", "yes", ...],        class names, in the order of the output logits
     "input": "features" | "audio",              log-mel [1, 32, 32] or 16 kHz PCM [1, 16000]
     "sample_rate": 16000,
     "features": {"kind": "log_mel", "sample_rate": 16000, "clip_samples": 16000,
                  "n_fft": 2048, "hop": 512, "n_mels": 32, "f_min": 0.0, "f_max": 8000.0,
                  "amin": 1e-10},                 pipeline.features.FeatureConfig: all that
                                                  pipeline.features.log_mel needs
     "arch": "bifsmnv2", "model_kwargs": {...},   registry name and size flags (model.json)
     "depth": 8, "flavor": "lce",                 thinnable depth, export flavor
     "version": "0.15.0"}                         the project version that wrote it

Unknown extra keys are kept and ignored (a later version may add some).

* ``describe(...)``: the dict, validated; ``write(flatbuffer, description)``: the same model
  with the entry added (or replaced): the schema's generated object API
  (``tensorflow.lite.python.schema_py_generated``) unpacks the model and packs it again with
  one more buffer and metadata entry; tensors, operators and constant buffers are unchanged
  (constant data stays 16-byte aligned, ``write_model``).
* ``read(flatbuffer, name)``: the description, or None for a model without one (exports from
  before this version, models that are not classifiers); the bytes are verified first
  (``pipeline.model_verify``: nothing reads unverified bytes). A present but malformed entry
  (not UTF-8 JSON, missing or mistyped fields, a class count that differs from the output
  tensor's, two entries) raises ``DescriptionError`` (a ``model_verify.ModelError``: the tools
  exit with status 2 and one line). The C++ verifier (``lce_kernels/tflite/model_verify.cc``)
  checks the same entry's JSON and class count before this module reads it.
* ``remove(flatbuffer)``: the model without the entry (tests; a legacy-style file).

Tools never read the description themselves: ``pipeline.predictors`` does (the one loader),
and merges it with the sidecar JSON (``<model>.json``, the export's report): the file wins.

    python -m pipeline.tflite_metadata --models A.tflite,B.tflite      # print descriptions
    python -m pipeline.tflite_metadata --models A.tflite --stamp       # add one to an old file

``--stamp`` builds the description of a file exported before this version from its sidecar
(labels, input, flavor, depth, model, model_kwargs) and the feature configuration of the
checkpoint's ``model.json`` when it is found (else ``pipeline.features.DEFAULT``), writes the
file atomically, and updates the sidecar's ``sha256``, ``file_bytes`` and ``description``; in
an export folder (``exports.json``) also the storage savings, .md reports and the index
(``pipeline.export.refresh_reports``). The model's arithmetic is untouched; the file grows by
the description and by padding: the object API writes every constant buffer 16-byte aligned,
as the schema asks (``Buffer.data: [ubyte] (force_align: 16)``), which the converters' own
output does not always do.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from pipeline.model_verify import ModelError

KEY = "bkws.description"
FORMAT = "bkws.description/1"
INPUT_KINDS = ("features", "audio")
FEATURE_KIND = "log_mel"
MAX_BYTES = 1 << 16  # the verifier refuses larger descriptions (ours are < 1 KiB)


class DescriptionError(ModelError):
    """A model whose ``bkws.description`` metadata is malformed or does not fit the model."""


def project_version() -> str:
    import pipeline
    return pipeline.__version__


# -- the schema's object API ----------------------------------------------------------------------
def _schema():
    from tensorflow.lite.python import schema_py_generated as S
    return S


def _aligned_buffer_class():
    S = _schema()

    class AlignedBuffer(S.BufferT):  # constant data 16-byte aligned, like the converter
        def Pack(self, builder):
            off = None
            if self.data is not None and len(self.data):
                raw = bytes(np.asarray(self.data, np.uint8).tobytes())
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                off = builder.EndVector()
            S.BufferStart(builder)
            if off is not None:
                S.BufferAddData(builder, off)
            if self.offset:
                S.BufferAddOffset(builder, self.offset)
            if self.size:
                S.BufferAddSize(builder, self.size)
            return S.BufferEnd(builder)

    return AlignedBuffer


def read_model(flatbuffer: bytes):
    """The model as the schema's object tree (``ModelT``). Only for bytes this project wrote
    or verified (``pipeline.model_verify``): the generated reader trusts every offset."""
    S = _schema()
    return S.ModelT.InitFromObj(S.Model.GetRootAs(bytearray(flatbuffer), 0))


def write_model(model) -> bytes:
    """``ModelT`` -> .tflite bytes (file identifier TFL3, constant data 16-byte aligned)."""
    import flatbuffers
    cls = _aligned_buffer_class()
    for b in model.buffers or []:
        b.__class__ = cls
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# -- the description ------------------------------------------------------------------------------
def feature_dict(features=None) -> dict:
    """``features`` (a FeatureConfig, a dict of its fields e.g. model.json's, or None for
    ``pipeline.features.DEFAULT``) as the description's ``features`` entry."""
    from pipeline.features import DEFAULT, FeatureConfig
    if features is None:
        features = DEFAULT
    if isinstance(features, FeatureConfig):
        features = dataclasses.asdict(features)
    return {"kind": FEATURE_KIND, **{k: v for k, v in dict(features).items() if k != "kind"}}


def feature_config(description: dict):
    """The description's ``features`` as a ``pipeline.features.FeatureConfig``."""
    from pipeline.features import FeatureConfig
    fields = {f.name for f in dataclasses.fields(FeatureConfig)}
    return FeatureConfig(**{k: v for k, v in description["features"].items() if k in fields})


def describe(labels, input_kind, arch, depth, flavor, model_kwargs=None, features=None,
             **extra) -> dict:
    """The description of a model (validated; ``DescriptionError`` if a value is wrong)."""
    feats = feature_dict(features)
    desc = {"format": FORMAT, "labels": list(labels), "input": input_kind,
            "sample_rate": feats.get("sample_rate"), "features": feats, "arch": arch,
            "model_kwargs": dict(model_kwargs or {}), "depth": depth, "flavor": flavor,
            "version": project_version(), **extra}
    return validate(desc)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def validate(desc, n_outputs: Optional[int] = None, where: str = "the model") -> dict:
    """``desc`` unchanged if it is a well-formed description (module docstring) whose class
    count is ``n_outputs`` (when given); else ``DescriptionError`` naming ``where``."""
    from pipeline.features import FeatureConfig

    def bad(what):
        return DescriptionError(f"{where}: its {KEY} metadata {what}; expected the JSON "
                                "description pipeline.export writes (pipeline/tflite_metadata.py)")

    if not isinstance(desc, dict):
        raise bad(f"is a JSON {type(desc).__name__}, not an object")
    fmt = desc.get("format")
    if not isinstance(fmt, str) or fmt.split("/")[0] != KEY:
        raise bad(f"has format {repr(fmt)[:40]} (not {FORMAT!r})")
    if fmt != FORMAT:
        raise bad(f"has format {fmt[:40]!r}, which this version ({project_version()}) cannot "
                  f"read (it reads {FORMAT!r})")
    labels = desc.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(l, str) and l
                                                        for l in labels)):
        raise bad(f"lists labels {str(labels)[:100]} (not a list of class names)")
    if len(set(labels)) != len(labels):
        raise bad(f"lists a class twice ({labels})")
    if n_outputs is not None and len(labels) != n_outputs:
        raise bad(f"lists {len(labels)} classes but the model's output has {n_outputs} logits")
    if desc.get("input") not in INPUT_KINDS:
        raise bad(f"has input {repr(desc.get('input'))[:40]} (not one of {INPUT_KINDS})")
    feats = desc.get("features")
    fields = {f.name: f.type for f in dataclasses.fields(FeatureConfig)}
    if not isinstance(feats, dict) or feats.get("kind") != FEATURE_KIND:
        raise bad(f"has features {str(feats)[:100]} (not a {FEATURE_KIND!r} configuration)")
    missing = sorted(set(fields) - set(feats))
    if missing:
        raise bad(f"lacks feature setting(s) {missing}")
    for k in fields:
        if not _number(feats[k]) or (fields[k] in ("int", int) and not isinstance(feats[k], int)):
            raise bad(f"has features.{k} = {repr(feats[k])[:40]} (not a finite "
                      f"{'integer' if fields[k] in ('int', int) else 'number'})")
    if desc.get("sample_rate") != feats["sample_rate"]:
        raise bad(f"has sample_rate {str(desc.get('sample_rate'))[:20]} but features."
                  f"sample_rate {feats['sample_rate']}")
    for k in ("arch", "flavor", "version"):
        if not (isinstance(desc.get(k), str) and desc[k]):
            raise bad(f"has {k} {repr(desc.get(k))[:40]} (not a name)")
    depth = desc.get("depth")
    if not (isinstance(depth, int) and not isinstance(depth, bool) and depth >= 1):
        raise bad(f"has depth {repr(depth)[:20]} (not an integer >= 1)")
    if not isinstance(desc.get("model_kwargs", {}), dict):
        raise bad("has model_kwargs that are not an object")
    return desc


def encode(desc: dict) -> bytes:
    """The entry's bytes: compact UTF-8 JSON with sorted keys (deterministic)."""
    raw = json.dumps(desc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_BYTES:
        raise DescriptionError(f"the description is {len(raw)} B; at most {MAX_BYTES} B")
    return raw


def decode(raw: bytes, n_outputs: Optional[int] = None, where: str = "the model") -> dict:
    """Bytes of the entry -> validated description (``DescriptionError`` if malformed)."""
    def no_constant(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        desc = json.loads(bytes(raw).decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise DescriptionError(
            f"{where}: its {KEY} metadata is not UTF-8 JSON ({str(e)[:120]}); expected the "
            "JSON description pipeline.export writes (pipeline/tflite_metadata.py)") from e
    return validate(desc, n_outputs, where)


def _output_classes(model) -> Optional[int]:
    """Last dimension of the first subgraph's first output (accessor or object API)."""
    if hasattr(model, "SubgraphsLength"):
        if not model.SubgraphsLength():
            return None
        sg = model.Subgraphs(0)
        if not sg.OutputsLength():
            return None
        shape = sg.Tensors(int(sg.Outputs(0))).ShapeAsNumpy()
        return int(shape[-1]) if isinstance(shape, np.ndarray) and shape.size else None
    if not model.subgraphs or model.subgraphs[0].outputs is None or \
            not len(model.subgraphs[0].outputs):
        return None
    sg = model.subgraphs[0]
    shape = sg.tensors[int(sg.outputs[0])].shape
    return int(shape[-1]) if shape is not None and len(shape) else None


def _name(entry_name) -> str:
    return entry_name.decode("utf-8", "replace") if isinstance(entry_name, bytes) else \
        str(entry_name)


def read_verified(flatbuffer: bytes, where: str = "the model") -> Optional[dict]:
    """``read`` for bytes ``pipeline.model_verify`` has already accepted."""
    S = _schema()
    m = S.Model.GetRootAs(bytearray(flatbuffer), 0)
    found = [i for i in range(m.MetadataLength()) if _name(m.Metadata(i).Name()) == KEY]
    if not found:
        return None
    if len(found) > 1:
        raise DescriptionError(f"{where}: {len(found)} {KEY} metadata entries; expected one")
    data = m.Buffers(m.Metadata(found[0]).Buffer()).DataAsNumpy()
    raw = data.tobytes() if isinstance(data, np.ndarray) else b""
    if not raw:
        raise DescriptionError(f"{where}: its {KEY} metadata buffer is empty; expected the "
                               "JSON description pipeline.export writes")
    return decode(raw, _output_classes(m), where)


def read(flatbuffer: bytes, where: str = "the model") -> Optional[dict]:
    """The model's description, None if it has none; the bytes are verified first
    (``ModelError`` for a damaged file, ``DescriptionError`` for a malformed description)."""
    from pipeline.model_verify import verify_model
    return verify_model(flatbuffer, where)  # verifies, then reads and validates it


def write(flatbuffer: bytes, desc: dict) -> bytes:
    """``flatbuffer`` with ``desc`` as its ``bkws.description`` entry (replacing an old one);
    every other part of the model is unchanged."""
    S = _schema()
    model = read_model(flatbuffer)
    raw = encode(validate(desc, _output_classes(model), "the model being written"))
    data = np.frombuffer(raw, np.uint8).copy()
    entries = [e for e in (model.metadata or []) if _name(e.name) == KEY]
    if entries:
        for e in entries[1:]:
            model.metadata.remove(e)  # its buffer stays (indices of others must not move)
        model.buffers[entries[0].buffer].data = data
    else:
        buf = S.BufferT()
        buf.data = data
        model.buffers.append(buf)
        entry = S.MetadataT()
        entry.name, entry.buffer = KEY, len(model.buffers) - 1
        model.metadata = (model.metadata or []) + [entry]
    return write_model(model)


def remove(flatbuffer: bytes) -> bytes:
    """``flatbuffer`` without a ``bkws.description`` entry: its buffer is dropped when it is
    the last one and nothing else uses it (as ``write`` appends it: ``remove(write(m, d))``
    is ``m``), else emptied (other buffers' indices must not move)."""
    model = read_model(flatbuffer)
    ours = [e for e in (model.metadata or []) if _name(e.name) == KEY]
    model.metadata = [e for e in (model.metadata or []) if e not in ours] or None
    used = {int(b) for b in (model.metadataBuffer or [])}
    used |= {e.buffer for e in (model.metadata or [])}
    used |= {t.buffer for sg in (model.subgraphs or []) for t in (sg.tensors or [])}
    for b in sorted({e.buffer for e in ours}, reverse=True):
        if b in used:
            continue
        if b == len(model.buffers) - 1:
            model.buffers.pop()
        else:
            model.buffers[b].data = None
    return write_model(model)


# -- stamping files exported before this version -----------------------------------------------
def description_from_sidecar(path: str, sidecar: dict) -> dict:
    """The description of ``path`` from its export report (``<model>.json``) and the
    feature configuration of the checkpoint it names (model.json), else the default."""
    from pipeline import checkpoints
    features = None
    ckpt = sidecar.get("checkpoint")
    if isinstance(ckpt, str):
        try:
            features = checkpoints.read_model_json(ckpt).get("features")
        except checkpoints.CheckpointError:
            features = None
    try:
        return describe(sidecar["labels"], sidecar.get("input", "features"), sidecar["model"],
                        int(sidecar["depth"]), sidecar["flavor"], sidecar.get("model_kwargs"),
                        features)
    except KeyError as e:
        raise checkpoints.CheckpointError(
            f"the sidecar of {path} has no {e}; expected the report pipeline.export writes "
            "(labels, input, model, depth, flavor)") from e


def stamp(path: str) -> dict:
    """Give ``path`` (an export from before this version) its description from its sidecar,
    keeping everything else; update the sidecar's digest, size and description. Returns the
    description."""
    from pipeline import checkpoints, model_contract
    sidecar_path = os.path.splitext(path)[0] + ".json"
    if not os.path.exists(sidecar_path):
        raise checkpoints.CheckpointError(
            f"cannot stamp {path}: {sidecar_path} is missing; expected the report "
            "pipeline.export wrote next to it")
    with open(sidecar_path) as f:
        sidecar = json.load(f)
    with open(path, "rb") as f:
        old = f.read()
    read(old, path)  # verified (and a present description valid) before it is rewritten
    desc = description_from_sidecar(path, sidecar)
    new = write(old, desc)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(new)
    os.replace(tmp, path)
    sidecar.update({"file_bytes": len(new), "sha256": model_contract.sha256(new),
                    "description": desc})
    checkpoints.atomic_write_json(sidecar_path, sidecar, indent=2)
    return desc


# -- command line ---------------------------------------------------------------------------------
def define_flags():
    from absl import flags
    flags.DEFINE_list("models", [], "The .tflite files (comma separated; more may follow as "
                      "plain arguments).")
    flags.DEFINE_bool("stamp", False, "Write the description into files exported before it "
                      "existed (built from each file's sidecar JSON; updates the sidecar's "
                      "sha256, file_bytes and description).")


def main(argv):
    from absl import app, flags
    from pipeline.model_verify import verify_file
    FLAGS = flags.FLAGS
    paths = list(FLAGS.models) + list(argv[1:])
    if not paths:
        raise app.UsageError("give the .tflite files: --models A.tflite,B.tflite")
    out = {}
    for path in paths:
        desc = stamp(path) if FLAGS.stamp else read_verified(verify_file(path), path)
        out[path] = desc
        print(f"{path}: " + (json.dumps(desc, sort_keys=True) if desc else
                             f"no {KEY} metadata (exported before it existed: --stamp adds it "
                             "from the sidecar)"))
    if FLAGS.stamp:  # reports of an export folder: sizes, savings, .md, exports.json / .md
        for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in paths}):
            if os.path.exists(os.path.join(folder, "exports.json")):
                from pipeline import export
                export.refresh_reports(folder)
                print(f"{folder}: reports and exports.json / .md refreshed")
    return {"descriptions": out}  # --json_out


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags)
