"""Op census of a .tflite flatbuffer (LCE or plain TFLite), for tests and the export tool.

Parses the flatbuffer with the TFLite schema module that ships in the larq-compute-engine
wheel (`larq_compute_engine.mlir.python.tflite_schema`, falling back to TensorFlow's
`tensorflow.lite.python.schema_py_generated`); no interpreter is needed, so it also works
for models with custom ops no Python runtime can run.

    from models.lce_census import op_census, op_list
    census = op_census(flatbuffer_bytes)      # Counter({'LceBconv2d': 36, 'ADD': ..., ...})
    ops = op_list(flatbuffer_bytes)           # [{'op', 'inputs': [(name, shape, dtype)], ...}]

CLI: python -m models.lce_census model.tflite
"""
import collections
import sys

try:  # the schema shipped with the LCE converter
    from larq_compute_engine.mlir.python import tflite_schema as _schema
except ImportError:  # pragma: no cover
    from tensorflow.lite.python import schema_py_generated as _schema

__all__ = ["op_census", "op_list", "float_weight_ops", "format_census"]

_BUILTIN_NAMES = {v: k for k, v in vars(_schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(_schema.TensorType).items() if not k.startswith("_")}

#: float ops that carry weights (what "stays float" means for a layer)
FLOAT_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _model(flatbuffer: bytes):
    buf = bytearray(flatbuffer)
    return _schema.Model.GetRootAs(buf, 0)


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


def op_list(flatbuffer: bytes, subgraph: int = 0):
    """Ops of one subgraph in execution order, with input / output tensor name, shape, type."""
    model = _model(flatbuffer)
    names = _opcode_names(model)
    sg = model.Subgraphs(subgraph)

    def tensor(i):
        if i < 0:
            return None
        t = sg.Tensors(i)
        return (t.Name().decode(), tuple(t.ShapeAsNumpy()) if t.ShapeLength() else (),
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


if __name__ == "__main__":  # pragma: no cover
    data = open(sys.argv[1], "rb").read()
    print(format_census(op_census(data)))
    for op, name, shape in float_weight_ops(data):
        print(f"float {op:20s} {shape} {name}")
