"""Op census of a .tflite flatbuffer (LCE or plain TFLite), for tests and the export tool.

Reads: --model (a .tflite file).
Writes: nothing; prints the op census and the float weight ops (also to --json_out).

Parses the flatbuffer with the TFLite schema module that ships in the larq-compute-engine
wheel (`larq_compute_engine.mlir.python.tflite_schema`, falling back to TensorFlow's
`tensorflow.lite.python.schema_py_generated`); no interpreter is needed, so it also works
for models with custom ops no Python runtime can run.

Damaged input never escapes as ``struct.error`` / ``UnicodeDecodeError`` / ``IndexError``:
every reader verifies the bytes first (``pipeline.model_verify``: the TFLite schema's
flatbuffers verifier plus index / UTF-8 checks, so the Python accessors below only follow
checked offsets) and raises ``pipeline.model_verify.ModelError`` with the reason.

    from models.lce_census import op_census, op_list
    census = op_census(flatbuffer_bytes)      # Counter({ops.BCONV2D: 36, 'ADD': ..., ...})
    ops = op_list(flatbuffer_bytes)           # [{'op', 'inputs': [(name, shape, dtype)], ...}]

CLI: python -m models.lce_census --model model.tflite
"""
import collections
import functools
import struct

from lce_kernels import ops

try:  # the schema shipped with the LCE converter
    from larq_compute_engine.mlir.python import tflite_schema as _schema
except ImportError:  # pragma: no cover
    from tensorflow.lite.python import schema_py_generated as _schema

__all__ = ["op_census", "op_list", "float_weight_ops", "format_census", "has_lce_ops",
           "custom_ops", "constant_bytes", "ops_in_scope", "has_bdfsmn_ops", "has_own_ops"]

_BUILTIN_NAMES = {v: k for k, v in vars(_schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(_schema.TensorType).items() if not k.startswith("_")}

#: float ops that carry weights (what "stays float" means for a layer)
FLOAT_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _model(flatbuffer: bytes):
    """The verified root table (``ModelError`` if the bytes are not a valid TFLite model)."""
    from pipeline.model_verify import verify_model
    verify_model(flatbuffer, "model")
    buf = bytearray(flatbuffer)
    return _schema.Model.GetRootAs(buf, 0)


def _subgraph(model, subgraph: int):
    from pipeline.model_verify import ModelError
    n = model.SubgraphsLength()
    if not 0 <= subgraph < n:
        raise ModelError(f"model has {n} subgraph(s), no subgraph {subgraph}")
    return model.Subgraphs(subgraph)


def _reader(fn):
    """Damaged-input errors of the Python flatbuffer accessors become ``ModelError`` (the
    verifier should already have refused such bytes; this keeps the promise if it did not)."""
    @functools.wraps(fn)
    def wrapper(flatbuffer, *args, **kwargs):
        try:
            return fn(flatbuffer, *args, **kwargs)
        except (struct.error, UnicodeDecodeError, IndexError) as e:
            from pipeline.model_verify import ModelError
            raise ModelError(f"model is not a valid TFLite model: {type(e).__name__}: {e}") from e
    return wrapper


def _opcode_names(model):
    names = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        custom = oc.CustomCode()
        if custom:
            names.append(custom.decode())
        else:
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            names.append(_BUILTIN_NAMES.get(code, f"BUILTIN_{code}"))
    return names


@_reader
def op_list(flatbuffer: bytes, subgraph: int = 0):
    """Ops of one subgraph in execution order, with input / output tensor name, shape, type."""
    model = _model(flatbuffer)
    names = _opcode_names(model)
    sg = _subgraph(model, subgraph)

    def tensor(i):
        if i < 0:
            return None
        t = sg.Tensors(i)
        return ((t.Name() or b"").decode(), tuple(t.ShapeAsNumpy()) if t.ShapeLength() else (),
                _TYPE_NAMES.get(t.Type(), t.Type()))

    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        ops.append({
            "op": names[op.OpcodeIndex()],
            "inputs": [tensor(j) for j in op.InputsAsNumpy()] if op.InputsLength() else [],
            "outputs": [tensor(j) for j in op.OutputsAsNumpy()] if op.OutputsLength() else [],
        })
    return ops


def op_census(flatbuffer: bytes, subgraph: int = 0) -> collections.Counter:
    """Counter of op names (builtin names as in the schema, custom ops by their code)."""
    return collections.Counter(o["op"] for o in op_list(flatbuffer, subgraph))


def float_weight_ops(flatbuffer: bytes, subgraph: int = 0):
    """Float conv / depthwise / dense ops as (op, weight tensor name, weight shape)."""
    out = []
    for o in op_list(flatbuffer, subgraph):
        if o["op"] in FLOAT_WEIGHT_OPS and len(o["inputs"]) > 1 and o["inputs"][1]:
            w = o["inputs"][1]
            out.append((o["op"], w[0], w[1]))
    return out


def format_census(census: collections.Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(census.items(), key=lambda kv: -kv[1]))


def has_lce_ops(flatbuffer: bytes) -> bool:
    """True if any op is a Larq Compute Engine op (needs the LCE runtime); our own
    ``ops.BDFSMN`` (lce_kernels/: runs in TensorFlow's InterpreterWithCustomOps, not in the LCE
    interpreter) is not one, nor is any of ``ops.OWN_OPS`` (see ``has_own_ops``)."""
    return any(ops.is_lce_op(name) for name in op_census(flatbuffer))


@_reader
def custom_ops(flatbuffer: bytes) -> list:
    """Sorted names of the custom ops (not TFLite builtins) in the model's operator codes."""
    model = _model(flatbuffer)
    return sorted({model.OperatorCodes(i).CustomCode().decode()
                   for i in range(model.OperatorCodesLength())
                   if model.OperatorCodes(i).CustomCode()})


def has_bdfsmn_ops(flatbuffer: bytes) -> bool:
    """True if the model holds ``ops.BDFSMN`` custom ops (lce_kernels/, needs its registerer)."""
    return op_census(flatbuffer).get(ops.BDFSMN, 0) > 0


def has_own_ops(flatbuffer: bytes) -> bool:
    """True if the model holds any of the project's own ops (``ops.OWN_OPS``: no LCE runtime
    has them; the model needs the project's registerer, ``ops.registerers()``)."""
    census = op_census(flatbuffer)
    return any(census.get(name, 0) > 0 for name in ops.OWN_OPS)


@_reader
def constant_bytes(flatbuffer: bytes, subgraph: int = 0) -> dict:
    """Bytes of the constant tensors (weights), each buffer counted once (the converter
    shares one buffer between tensors, e.g. the filter of the two ``ops.BCONV2D`` of a
    dual-scale conv). Returns {"total", "binary_filters", "float_weights", "other", "by_type"}:
    binary_filters = filters of ``ops.BCONV2D`` and the bit-packed weights of ``ops.BDFSMN``
    (int32), float_weights = kernels of
    CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, other = everything else (biases,
    per-channel multipliers, thresholds, PReLU slopes, shape constants...)."""
    model = _model(flatbuffer)
    names = _opcode_names(model)
    sg = _subgraph(model, subgraph)

    def buffer_size(b):
        buf = model.Buffers(b)
        n = buf.DataLength()
        return n if n else int(buf.Size() or 0)

    role = {}
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name = names[op.OpcodeIndex()]
        inputs = op.InputsAsNumpy() if op.InputsLength() else []
        if len(inputs) > 1 and inputs[1] >= 0:
            b = sg.Tensors(int(inputs[1])).Buffer()
            if name == ops.BCONV2D:
                role[b] = "binary_filters"
            elif name == ops.BDFSMN:  # bit-packed mem_w, pw1_w, pw2_w
                for k in ops.BDFSMN_BIT_INPUTS:
                    if len(inputs) > k and inputs[k] >= 0:
                        role[sg.Tensors(int(inputs[k])).Buffer()] = "binary_filters"
            elif name in FLOAT_WEIGHT_OPS:
                role.setdefault(b, "float_weights")
    out = {"total": 0, "binary_filters": 0, "float_weights": 0, "other": 0, "by_type": {}}
    seen = set()
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        b = t.Buffer()
        if b <= 0 or b in seen:
            continue
        n = buffer_size(b)
        if not n:
            continue
        seen.add(b)
        out["total"] += n
        out[role.get(b, "other")] += n
        tname = _TYPE_NAMES.get(t.Type(), str(t.Type()))
        out["by_type"][tname] = out["by_type"].get(tname, 0) + n
    return out


def ops_in_scope(flatbuffer: bytes, scope: str, subgraph: int = 0):
    """Ops whose output tensor (or first input) name lies in the Keras name scope ``scope``
    (e.g. ``dfsmn/layer3/pw1``): ``/scope/`` occurs in the name. The converter joins fused
    names with ';' and truncates long names, so the match is on a substring."""
    key = "/" + scope.strip("/") + "/"
    found = []
    for o in op_list(flatbuffer, subgraph):
        names = [t[0] for t in o["outputs"] if t] + [t[0] for t in o["inputs"][:1] if t]
        if any(key in "/" + n for n in names):
            found.append(o)
    return found


def define_flags():
    from absl import flags
    flags.DEFINE_string("model", None, "The .tflite to take the op census of.")


def main(argv):
    """``--model FILE`` (the positional ``FILE`` still works, deprecated)."""
    from absl import app, flags

    from pipeline import cli_vocabulary
    path, extra = flags.FLAGS.model, list(argv[1:])
    if not path and len(extra) == 1:
        cli_vocabulary.warn("python -m models.lce_census FILE is deprecated; use --model FILE")
        path, extra = extra[0], []
    if extra:
        raise app.UsageError(f"unexpected arguments: {' '.join(extra)}")
    if not path:
        raise app.UsageError("--model is required (a .tflite file)")
    with open(path, "rb") as f:
        data = f.read()
    from pipeline.model_verify import verify_model
    verify_model(data, path)  # the error names the file (the readers say "model")
    census = op_census(data)
    print(format_census(census))
    floats = float_weight_ops(data)
    for op, name, shape in floats:
        print(f"float {op:20s} {shape} {name}")
    return {"model": path, "ops": dict(census), "lce_ops": has_lce_ops(data),  # --json_out
            "bdfsmn_ops": census.get(ops.BDFSMN, 0), "constant_bytes": constant_bytes(data),
            "float_weight_ops": [{"op": op, "weight": name, "shape": list(shape)}
                                 for op, name, shape in floats]}


if __name__ == "__main__":  # pragma: no cover  (tests/test_cli_errors.py runs it)
    from pipeline import cli
    cli.run(main, define=define_flags)
