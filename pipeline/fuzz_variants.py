"""Damaged variants of a .tflite for the fuzz harness (``pipeline.fuzz_models``).

``Source(path)`` holds one model file (bytes, sidecar, the structural facts the edits need);
``Source.variant(seed, index)`` makes variant ``index``: the same (seed, file name, index)
always gives the same bytes, so any variant a run reports can be rebuilt alone
(``python -m pipeline.fuzz_models --models FILE --seed S --only INDEX --out_dir DIR``).

Kinds (cycled by index, so even 20 variants cover each kind once; the parameters are random):

* raw bytes: ``byte_flip`` (anywhere) and ``struct_flip`` (only outside the constant-buffer
  data, where the flatbuffer's tables, vtables and offsets live: random flips of a model that
  is mostly weights rarely hit them otherwise), ``bit_flip``, ``truncate`` (random length),
  ``truncate_small`` (0 / 1 / 4 / 8 bytes), ``zero_run``;
* targeted schema edits through the flatbuffer object API (``pipeline.bdfsmn.read_model`` /
  ``write_model``, the ``tflite`` schema module the bdfsmn export is spliced with):
  ``tensor_type``, ``tensor_shape``, ``buffer_index``, ``op_input_index``, ``op_self_input``
  (an op reading its own output), ``opcode_index``, ``builtin_options`` (tag of another type,
  options table of another type, options dropped), ``custom_options`` (for models with custom
  ops: truncated, garbled, resized, one FlexBuffers value changed),
  ``metadata_buffer``, ``quantization`` (scale / zero-point arrays of mismatched length,
  quantized dimension out of range, zero / NaN scales), ``subgraph_io`` (outputs missing or
  out of range...), ``structure`` (no subgraphs / buffers / opcodes / operators, or the
  operators in reverse order);
* length prefixes patched in the bytes (what the object API cannot write): ``vector_length``
  (the uint32 length of a buffer's data, a shape, an op's inputs / outputs, the subgraph's
  outputs) and ``custom_options_length`` (of an op's custom options: the issue's case, one
  flipped byte made it ~3.77 GB).

Each ``Variant`` carries ``kind`` and ``params`` (JSON-able: offsets, tensor / op indices, old
and new values): how it was made, for the report and for reproduction.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import zlib
from typing import Callable, Dict, List, Optional

import numpy as np

U32_MAX = 2 ** 32 - 1
I32_MAX = 2 ** 31 - 1
# slots (vtable offsets) of the vectors whose length prefix ``vector_length`` patches
_SLOT_BUFFER_DATA, _SLOT_TENSOR_SHAPE, _SLOT_OP_INPUTS, _SLOT_OP_OUTPUTS = 4, 4, 6, 8
_SLOT_OP_CUSTOM_OPTIONS, _SLOT_SUBGRAPH_OUTPUTS = 14, 8
FLAVOR_RE = re.compile(r"^(?P<flavor>.+)_d(?P<depth>\d+)$")


def _schema():
    from lce_kernels import ops
    return ops.schema()


@dataclasses.dataclass
class Variant:
    """One damaged model: its bytes and how they were made."""
    source: str
    seed: int
    index: int
    kind: str
    params: Dict
    data: bytes

    def recipe(self) -> Dict:
        return {"source": self.source, "seed": self.seed, "index": self.index,
                "kind": self.kind, "params": self.params}

    def describe(self) -> str:
        return f"{os.path.basename(self.source)} #{self.index} {self.kind} " + json.dumps(
            self.params, sort_keys=True, default=str)


def flavor_of(path: str) -> str:
    """Flavor of an export file name ``<flavor>_d<depth>.tflite`` (the stem otherwise)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    m = FLAVOR_RE.match(stem)
    return m.group("flavor") if m else stem


def _vector_pos(table, slot) -> Optional[int]:
    """Absolute position of the first element of a vector field of a flatbuffer table (its
    uint32 length sits 4 bytes before), None when the field is absent."""
    o = table._tab.Offset(slot)
    return table._tab.Vector(o) if o else None


class Source:
    """One original model file and what the edits need to know about it."""

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        self.flavor = flavor_of(path)
        with open(path, "rb") as f:
            self.data = f.read()
        sidecar = os.path.splitext(path)[0] + ".json"
        self.sidecar = None
        if os.path.exists(sidecar):
            with open(sidecar) as f:
                self.sidecar = json.load(f)
        from pipeline import bdfsmn
        self.model = bdfsmn.read_model(self.data)   # fails loudly on a damaged original
        self._scan()
        self.kinds = [k for k, applies in KINDS.items() if applies(self)]

    def _scan(self):
        S = _schema()
        m = S.Model.GetRootAs(bytearray(self.data), 0)
        data_mask = np.ones(len(self.data), bool)
        self.length_fields = {"buffer_data": [], "tensor_shape": [], "op_inputs": [],
                              "op_outputs": [], "custom_options": [], "subgraph_outputs": []}
        for i in range(m.BuffersLength()):
            pos = _vector_pos(m.Buffers(i), _SLOT_BUFFER_DATA)
            if pos is not None:
                n = m.Buffers(i).DataLength()
                data_mask[pos:pos + n] = False
                if n:
                    self.length_fields["buffer_data"].append(pos - 4)
        for s in range(m.SubgraphsLength()):
            sg = m.Subgraphs(s)
            pos = _vector_pos(sg, _SLOT_SUBGRAPH_OUTPUTS)
            if pos is not None:
                self.length_fields["subgraph_outputs"].append(pos - 4)
            for i in range(sg.TensorsLength()):
                pos = _vector_pos(sg.Tensors(i), _SLOT_TENSOR_SHAPE)
                if pos is not None and sg.Tensors(i).ShapeLength():
                    self.length_fields["tensor_shape"].append(pos - 4)
            for i in range(sg.OperatorsLength()):
                op = sg.Operators(i)
                for key, slot in (("op_inputs", _SLOT_OP_INPUTS),
                                  ("op_outputs", _SLOT_OP_OUTPUTS),
                                  ("custom_options", _SLOT_OP_CUSTOM_OPTIONS)):
                    pos = _vector_pos(op, slot)
                    if pos is not None and (key != "custom_options" or
                                            op.CustomOptionsLength()):
                        self.length_fields[key].append(pos - 4)
        self.struct_offsets = np.flatnonzero(data_mask)
        sg = self.model.subgraphs[0] if self.model.subgraphs else None
        self.custom_ops = [] if sg is None else [
            i for i, op in enumerate(sg.operators or [])
            if op.customOptions is not None and len(op.customOptions)]

    def rng(self, seed: int, index: int) -> np.random.Generator:
        return np.random.default_rng([seed, zlib.crc32(self.name.encode()), index])

    def variant(self, seed: int, index: int) -> Variant:
        kind = self.kinds[index % len(self.kinds)]
        rng = self.rng(seed, index)
        if kind in RAW:
            data, params = RAW[kind](self, rng)
        else:
            from pipeline import bdfsmn
            model = bdfsmn.read_model(self.data)
            params = TARGETED[kind](self, model, rng)
            data = bdfsmn.write_model(model)
        return Variant(self.path, seed, index, kind, params, data)


# -- raw byte edits ------------------------------------------------------------------------------
def _flip_bytes(src, rng, offsets):
    buf = bytearray(src.data)
    changes = []
    for off in offsets:
        off = int(off)
        new = int((buf[off] + rng.integers(1, 256)) % 256)
        changes.append([off, buf[off], new])
        buf[off] = new
    return bytes(buf), changes


def raw_byte_flip(src, rng):
    k = int(rng.integers(1, 9))
    data, changes = _flip_bytes(src, rng, rng.integers(0, len(src.data), k))
    return data, {"changes": changes}


def raw_struct_flip(src, rng):
    k = int(rng.integers(1, 5))
    data, changes = _flip_bytes(src, rng, rng.choice(src.struct_offsets, k))
    return data, {"changes": changes, "region": "structure"}


def raw_bit_flip(src, rng):
    buf = bytearray(src.data)
    bits = []
    for _ in range(int(rng.integers(1, 9))):
        off, bit = int(rng.integers(0, len(buf))), int(rng.integers(0, 8))
        buf[off] ^= 1 << bit
        bits.append([off, bit])
    return bytes(buf), {"bits": bits}


def raw_truncate(src, rng):
    n = int(rng.integers(0, len(src.data)))
    return src.data[:n], {"length": n, "of": len(src.data)}


def raw_truncate_small(src, rng):
    n = int(rng.choice([0, 1, 4, 8]))
    return src.data[:n], {"length": n, "of": len(src.data)}


def raw_zero_run(src, rng):
    length = int(rng.choice([int(rng.integers(1, 64)), int(rng.integers(64, 4096))]))
    off = int(rng.integers(0, max(1, len(src.data) - length)))
    buf = bytearray(src.data)
    buf[off:off + length] = bytes(len(buf[off:off + length]))
    return bytes(buf), {"offset": off, "length": length}


def raw_vector_length(src, rng):
    fields = [k for k, v in src.length_fields.items() if v]
    field = str(rng.choice(fields))
    return _patch_length(src, rng, field)


def _patch_length(src, rng, field):
    pos = int(rng.choice(src.length_fields[field]))
    old = int.from_bytes(src.data[pos:pos + 4], "little")
    new = int(rng.choice([0xE0C0_0000, U32_MAX, I32_MAX, old + 1, old + int(rng.integers(2, 4096)),
                          max(0, old - 1), 0]))
    buf = bytearray(src.data)
    buf[pos:pos + 4] = new.to_bytes(4, "little")
    return bytes(buf), {"field": field, "offset": pos, "from": old, "to": new}


# -- targeted edits (object API); each returns its params and edits ``model`` in place ---------
def _enum_names(enum_cls):
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def _pick_tensor(model, rng, need=None):
    """(index, role) of a tensor of subgraph 0: its input, its output, or any."""
    sg = model.subgraphs[0]
    cands = [i for i, t in enumerate(sg.tensors) if need is None or need(t)]
    role = str(rng.choice(["input", "output", "any", "any"]))
    io = {"input": list(sg.inputs if sg.inputs is not None else []),
          "output": list(sg.outputs if sg.outputs is not None else [])}.get(role, [])
    io = [int(i) for i in io if int(i) in cands]
    if io:
        return io[0], role
    return int(rng.choice(cands)), "any"


def edit_tensor_type(src, model, rng):
    S = _schema()
    names = _enum_names(S.TensorType)
    i, role = _pick_tensor(model, rng)
    t = model.subgraphs[0].tensors[i]
    choices = [v for v in names if v != t.type] + [99]
    new = int(rng.choice(choices))
    old, t.type = t.type, new
    return {"tensor": i, "role": role, "from": names.get(old, old), "to": names.get(new, new)}


def edit_tensor_shape(src, model, rng):
    i, role = _pick_tensor(model, rng, need=lambda t: t.shape is not None and len(t.shape))
    t = model.subgraphs[0].tensors[i]
    old = [int(s) for s in t.shape]
    mode = str(rng.choice(["entry", "entry", "drop_dim", "add_dim", "empty"]))
    new = list(old)
    if mode == "entry":
        j = int(rng.integers(0, len(old)))
        new[j] = int(rng.choice([-1, -1000, 0, I32_MAX, 1 << 20, int(rng.integers(1, 4096)),
                                 old[j] + 1]))
    elif mode == "drop_dim":
        del new[int(rng.integers(0, len(old)))]
    elif mode == "add_dim":
        new.insert(int(rng.integers(0, len(old) + 1)), int(rng.choice([1, 2, 7])))
    else:
        new = []
    t.shape = np.asarray(new, np.int32)
    if t.shapeSignature is not None and len(t.shapeSignature):
        t.shapeSignature = np.asarray(new, np.int32)
    return {"tensor": i, "role": role, "mode": mode, "from": old, "to": new}


def edit_buffer_index(src, model, rng):
    sg = model.subgraphs[0]
    consts = [i for i, t in enumerate(sg.tensors) if t.buffer]
    i = int(rng.choice(consts)) if consts and rng.random() < 0.7 else \
        int(rng.integers(0, len(sg.tensors)))
    t = sg.tensors[i]
    new = int(rng.choice([len(model.buffers) + int(rng.integers(0, 1000)), U32_MAX]))
    old, t.buffer = t.buffer, new
    return {"tensor": i, "from": int(old), "to": new, "buffers": len(model.buffers)}


def _pick_op(model, rng, need=None):
    ops = model.subgraphs[0].operators
    cands = [i for i, op in enumerate(ops) if need is None or need(op)]
    return int(rng.choice(cands))


def edit_op_input_index(src, model, rng):
    sg = model.subgraphs[0]
    k = _pick_op(model, rng, need=lambda op: op.inputs is not None and len(op.inputs))
    op = sg.operators[k]
    j = int(rng.integers(0, len(op.inputs)))
    new = int(rng.choice([len(sg.tensors) + int(rng.integers(0, 100)), I32_MAX, -2]))
    ins = [int(x) for x in op.inputs]
    old, ins[j] = ins[j], new
    op.inputs = np.asarray(ins, np.int32)
    return {"op": k, "input": j, "from": old, "to": new, "tensors": len(sg.tensors)}


def edit_op_self_input(src, model, rng):
    sg = model.subgraphs[0]
    k = _pick_op(model, rng, need=lambda op: op.inputs is not None and len(op.inputs) and
                 op.outputs is not None and len(op.outputs))
    op = sg.operators[k]
    j = int(rng.integers(0, len(op.inputs)))
    ins = [int(x) for x in op.inputs]
    old, ins[j] = ins[j], int(op.outputs[0])
    op.inputs = np.asarray(ins, np.int32)
    return {"op": k, "input": j, "from": old, "to": ins[j]}


def edit_opcode_index(src, model, rng):
    sg = model.subgraphs[0]
    k = _pick_op(model, rng)
    new = int(rng.choice([len(model.operatorCodes) + int(rng.integers(0, 100)), U32_MAX]))
    old, sg.operators[k].opcodeIndex = sg.operators[k].opcodeIndex, new
    return {"op": k, "from": int(old), "to": new, "opcodes": len(model.operatorCodes)}


def edit_builtin_options(src, model, rng):
    S = _schema()
    names = _enum_names(S.BuiltinOptions)
    sg = model.subgraphs[0]
    k = _pick_op(model, rng, need=lambda op: op.builtinOptionsType)
    op = sg.operators[k]
    old = names[op.builtinOptionsType]
    others = sorted(v for v, n in names.items() if v and v != op.builtinOptionsType and
                    hasattr(S, n + "T"))
    mode = str(rng.choice(["tag", "swap", "drop"]))
    if mode == "drop":
        op.builtinOptionsType, op.builtinOptions = 0, None
        new = "NONE"
    else:
        v = int(rng.choice(others))
        new = names[v]
        op.builtinOptionsType = v
        if mode == "swap":
            op.builtinOptions = getattr(S, new + "T")()
    return {"op": k, "mode": mode, "from": old, "to": new}


def edit_custom_options(src, model, rng):
    from flatbuffers import flexbuffers
    sg = model.subgraphs[0]
    k = int(rng.choice(src.custom_ops))
    op = sg.operators[k]
    old = bytes(np.asarray(op.customOptions, np.uint8).tobytes())
    from lce_kernels import ops
    code = ops.custom_code(model.operatorCodes[op.opcodeIndex])
    mode = str(rng.choice(["truncate", "garble", "resize", "value", "value"]))
    params = {"op": k, "custom_op": code, "mode": mode, "from_len": len(old)}
    if mode == "truncate":
        new = old[:int(rng.integers(0, len(old)))]
    elif mode == "garble":
        buf = bytearray(old)
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        new = bytes(buf)
    elif mode == "resize":
        extra = int(rng.integers(1, 64))
        new = (old + rng.bytes(extra)) if rng.random() < 0.5 else old[extra:]
    else:
        opts = flexbuffers.Loads(old)
        keys = sorted(key for key, v in opts.items() if isinstance(v, int))
        key = str(rng.choice(keys))
        v = int(rng.choice([0, -1, -(2 ** 31), I32_MAX, 2 ** 40, opts[key] * 2 + 1,
                            opts[key] - 1]))
        params.update(key=key, value_from=opts[key], value_to=v)
        opts[key] = v
        new = bytes(flexbuffers.Dumps(opts))
    op.customOptions = np.frombuffer(new, np.uint8).copy()
    params["to_len"] = len(new)
    return params


def edit_metadata_buffer(src, model, rng):
    S = _schema()
    mode = str(rng.choice(["index", "index", "content", "deprecated_index"]))
    if not model.metadata:
        md = S.MetadataT()
        md.name, md.buffer = "fuzz", 0
        model.metadata = [md]
    j = int(rng.integers(0, len(model.metadata)))
    md = model.metadata[j]
    name = md.name.decode() if isinstance(md.name, bytes) else md.name
    params = {"metadata": j, "name": name, "mode": mode}
    if mode == "index":
        new = int(rng.choice([len(model.buffers) + int(rng.integers(0, 100)), U32_MAX]))
        params.update({"from": int(md.buffer), "to": new})
        md.buffer = new
    elif mode == "content":
        b = S.BufferT()
        n = int(rng.choice([0, 1, 3, 64]))
        b.data = np.frombuffer(rng.bytes(n), np.uint8).copy() if n else None
        model.buffers.append(b)
        params.update({"from": int(md.buffer), "to": len(model.buffers) - 1, "bytes": n})
        md.buffer = len(model.buffers) - 1
    else:
        new = len(model.buffers) + int(rng.integers(0, 100))
        model.metadataBuffer = np.asarray([new], np.int32)
        params["to"] = new
    return params


def edit_quantization(src, model, rng):
    S = _schema()
    quantized = lambda t: (t.quantization is not None and t.quantization.scale is not None  # noqa
                           and len(t.quantization.scale))
    sg = model.subgraphs[0]
    i, role = (_pick_tensor(model, rng, need=quantized)
               if any(quantized(t) for t in sg.tensors) else _pick_tensor(model, rng))
    t = sg.tensors[i]
    q = t.quantization if t.quantization is not None else S.QuantizationParametersT()
    t.quantization = q
    scale = [float(s) for s in (q.scale if q.scale is not None else [])] or [0.5]
    zero = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [])] or [0]
    rank = len(t.shape) if t.shape is not None else 0
    mode = str(rng.choice(["len_mismatch", "qdim", "scale_len", "bad_scale", "empty_scale"]))
    params = {"tensor": i, "role": role, "mode": mode, "scale_len": len(scale)}
    if mode == "len_mismatch":
        zero = zero * 2 + [0] if len(zero) < 4 else zero[:1]
    elif mode == "qdim":
        q.quantizedDimension = int(rng.choice([rank, rank + 3, 127]))
        params["quantized_dimension"] = q.quantizedDimension
    elif mode == "scale_len":
        n = len(scale) + int(rng.integers(1, 8))
        scale, zero = scale[:1] * n, zero[:1] * n
    elif mode == "bad_scale":
        scale = [float(rng.choice([0.0, np.nan, np.inf, -1.0]))] * len(scale)
        params["scale"] = str(scale[0])
    else:
        scale = []
    q.scale, q.zeroPoint = np.asarray(scale, np.float32), np.asarray(zero, np.int64)
    params.update(scale_to=len(scale), zero_point_to=len(zero))
    return params


def edit_subgraph_io(src, model, rng):
    sg = model.subgraphs[0]
    n = len(sg.tensors)
    mode = str(rng.choice(["outputs_empty", "outputs_none", "outputs_out_of_range",
                           "inputs_empty", "inputs_out_of_range", "output_is_input",
                           "outputs_twice"]))
    ins, outs = [int(i) for i in sg.inputs], [int(i) for i in sg.outputs]
    if mode == "outputs_empty":
        outs = []
    elif mode == "outputs_none":
        outs = None
    elif mode == "outputs_out_of_range":
        outs = [n + int(rng.integers(0, 100))]
    elif mode == "inputs_empty":
        ins = []
    elif mode == "inputs_out_of_range":
        ins = [int(rng.choice([n + int(rng.integers(0, 100)), -5]))]
    elif mode == "output_is_input":
        outs = list(ins)
    else:
        outs = outs + outs
    sg.inputs = np.asarray(ins, np.int32)
    sg.outputs = None if outs is None else np.asarray(outs, np.int32)
    return {"mode": mode, "inputs": ins, "outputs": outs}


def edit_structure(src, model, rng):
    mode = str(rng.choice(["no_subgraphs", "no_buffers", "no_opcodes", "no_operators",
                           "ops_reversed"]))
    if mode == "no_subgraphs":
        model.subgraphs = []
    elif mode == "no_buffers":
        model.buffers = []
    elif mode == "no_opcodes":
        model.operatorCodes = []
    elif mode == "no_operators":
        model.subgraphs[0].operators = []
    else:
        model.subgraphs[0].operators = model.subgraphs[0].operators[::-1]
    return {"mode": mode}


def raw_custom_length(src, rng):
    """The length prefix of one op's custom options patched (Init must not trust it)."""
    return _patch_length(src, rng, "custom_options")


RAW: Dict[str, Callable] = {
    "byte_flip": raw_byte_flip, "struct_flip": raw_struct_flip, "bit_flip": raw_bit_flip,
    "truncate": raw_truncate, "truncate_small": raw_truncate_small, "zero_run": raw_zero_run,
    "vector_length": raw_vector_length, "custom_options_length": raw_custom_length,
}
TARGETED: Dict[str, Callable] = {
    "tensor_type": edit_tensor_type, "tensor_shape": edit_tensor_shape,
    "buffer_index": edit_buffer_index, "op_input_index": edit_op_input_index,
    "op_self_input": edit_op_self_input, "opcode_index": edit_opcode_index,
    "builtin_options": edit_builtin_options, "custom_options": edit_custom_options,
    "metadata_buffer": edit_metadata_buffer, "quantization": edit_quantization,
    "subgraph_io": edit_subgraph_io, "structure": edit_structure,
}
_has_ops = lambda s: bool(s.model.subgraphs and s.model.subgraphs[0].operators)  # noqa: E731
# kind -> does it apply to this source (cycled in this order by variant index)
KINDS: Dict[str, Callable[[Source], bool]] = {
    "byte_flip": lambda s: len(s.data) > 0,
    "tensor_type": _has_ops,
    "struct_flip": lambda s: len(s.struct_offsets) > 0,
    "tensor_shape": _has_ops,
    "truncate": lambda s: len(s.data) > 0,
    "buffer_index": _has_ops,
    "bit_flip": lambda s: len(s.data) > 0,
    "op_input_index": _has_ops,
    "truncate_small": lambda s: True,
    "op_self_input": _has_ops,
    "zero_run": lambda s: len(s.data) > 0,
    "opcode_index": _has_ops,
    "builtin_options": lambda s: _has_ops(s) and any(
        op.builtinOptionsType for op in s.model.subgraphs[0].operators),
    "vector_length": lambda s: any(s.length_fields.values()),
    "custom_options": lambda s: bool(s.custom_ops),
    "custom_options_length": lambda s: bool(s.length_fields["custom_options"]),
    "metadata_buffer": lambda s: True,
    "quantization": _has_ops,
    "subgraph_io": _has_ops,
    "structure": _has_ops,
}


def variants(src: Source, seed: int, count: int, start: int = 0) -> List[Variant]:
    return [src.variant(seed, i) for i in range(start, start + count)]
