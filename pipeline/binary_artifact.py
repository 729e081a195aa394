"""The `binary` export: the deployment artifact, bitwise from front end to classifier.

What it is: LCE's converter output for the binary student (``pipeline.export.convert(...,
"lce")``: conv2 and linear as bit-packed ``ops.BCONV2D``, float conv1 and classifier) with
every DFSMN layer's op chain (``ops.QUANTIZE`` / ``ops.DEQUANTIZE`` / ``ops.BCONV2D`` / SUB /
ABS / MEAN / MUL / ADD / DEPTHWISE_CONV_2D / PRELU, about 40 ops a layer) replaced by ONE
``ops.BDFSMN`` op, each remaining dual-scale binarization (conv2's and linear's inputs: the
converter's SUB / QUANTIZE / DEQUANTIZE / SUB / SUB / ABS / MEAN / QUANTIZE) by ONE
``ops.DUAL_QUANTIZE`` (``fuse_dual_quantize``; the streaming ``binary`` export uses it too),
then every tensor, buffer and operator code no op uses any more removed and identical
constant buffers stored once. On a device the file runs in LCE's runtime with
the op added through ``lce_kernels/BUILD``; on the host TensorFlow's
``InterpreterWithCustomOps`` runs it with the project's registerer (``ops.registerers()``,
which registers every op of ``ops.ALL_OPS``; ``pipeline.predictors`` routes any model holding
``ops.BDFSMN`` there). (``ops``: ``lce_kernels.ops``, the op contract.)

The ``ops.BDFSMN`` ops are the ``bdfsmn`` flavor's: inputs, parameter folding (BN, t2
constant, per-channel weight scale) and FlexBuffers options come from ``pipeline.bdfsmn``
(``student_layers``), and the op is added with the contract's flatbuffer helper
(``ops.Graph``);
this module only finds each layer's op chain in LCE's graph and rewires it. A layer's chain
is the ops whose output tensor carries the layer's name scope (``.../dfsmn/layer{j}/...``);
it is checked structurally before it is replaced: exactly one float activation enters it
(the previous layer's output) and exactly one tensor leaves it (the layer's residual ADD),
otherwise ``ValueError`` names the layer.

Written with the TFLite schema's generated Python object API
(``tensorflow.lite.python.schema_py_generated``: ModelT, OperatorT, TensorT, BufferT),
through ``pipeline.tflite_metadata.read_model`` / ``write_model`` (constant data 16-byte
aligned).
"""
from __future__ import annotations

import collections

import numpy as np

from lce_kernels import ops
from pipeline import bdfsmn
from pipeline.tflite_metadata import read_model, write_model

FLAVOR = "binary"
#: float ops that carry weights; in the artifact only conv1 (CONV_2D) and the classifier
#: (FULLY_CONNECTED) may remain
FLOAT_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ALLOWED_FLOAT = {"CONV_2D": 1, "FULLY_CONNECTED": 1}


def _S():
    from tensorflow.lite.python import schema_py_generated as S
    return S


def _name(t) -> str:
    n = t.name
    return n.decode() if isinstance(n, bytes) else (n or "")


def _is_const(m, t) -> bool:
    b = m.buffers[t.buffer] if 0 <= t.buffer < len(m.buffers) else None
    return b is not None and b.data is not None and len(b.data) > 0


def layer_ops(m, scope):
    """Indices of the ops of subgraph 0 whose (first fused) output name lies in ``scope``
    (e.g. ``dfsmn/layer3``)."""
    sg = m.subgraphs[0]
    key = scope.strip("/") + "/"
    out = []
    for i, op in enumerate(sg.operators):
        names = [_name(sg.tensors[o]).split(";")[0] for o in op.outputs]
        if any(n.startswith(key) or ("/" + key) in n for n in names):
            out.append(i)
    return out


def chain_boundary(m, ops):
    """(entering, leaving) tensors of the op chain ``ops`` in subgraph 0: the non-constant
    tensors it reads but does not produce (in order of first use), and the tensors it produces
    that an op outside it reads or that are graph outputs (sorted)."""
    sg = m.subgraphs[0]
    inside = set(ops)
    produced = {int(o) for i in ops for o in sg.operators[i].outputs}
    entering = []
    for i in ops:
        for t in sg.operators[i].inputs:
            t = int(t)
            if t >= 0 and t not in produced and not _is_const(m, sg.tensors[t]) \
                    and t not in entering:
                entering.append(t)
    read_outside = {int(t) for i, op in enumerate(sg.operators) if i not in inside
                    for t in op.inputs if t >= 0}
    read_outside |= {int(t) for t in sg.outputs}
    return entering, sorted(produced & read_outside)


def chain_io(m, ops, scope):
    """(input tensor, output tensor) of the op chain ``ops``: the one non-constant tensor it
    reads that it does not produce, and the one tensor it produces that something outside
    reads (or that is a graph output). ValueError otherwise."""
    sg = m.subgraphs[0]
    entering, leaving = chain_boundary(m, ops)
    if len(entering) != 1 or len(leaving) != 1:
        raise ValueError(
            f"{scope}: the converter's op chain ({len(ops)} ops) reads "
            f"{[_name(sg.tensors[t]) for t in entering]} and feeds "
            f"{[_name(sg.tensors[t]) for t in leaving]} outside; expected one activation in "
            "and one out (the layer's input and its residual sum)")
    return entering[0], leaving[0]


def replace_layer(m, scope, inputs, options):
    """Replace the op chain of DFSMN layer ``scope`` in ModelT ``m`` by one ``ops.BDFSMN`` op
    (``inputs``/``options``: ``pipeline.bdfsmn.student_layers``), placed where the chain
    began and writing the chain's output tensor. Returns the number of ops removed."""
    sg = m.subgraphs[0]
    chain = layer_ops(m, scope)
    if not chain:
        raise ValueError(f"{scope}: no op of this layer in the converter's output")
    x, y = chain_io(m, chain, scope)
    xs, ys = list(sg.tensors[x].shape), list(sg.tensors[y].shape)
    if xs != ys:
        raise ValueError(f"{scope}: layer input {xs} and output {ys} differ")
    g = ops.Graph(m)  # the bdfsmn flavor's op builder: same inputs, names, options
    g.add_bdfsmn(x, scope, inputs, options)
    op = sg.operators.pop()  # appended at the end: move it where the chain was
    op.outputs = [y]  # consumers keep reading the chain's output tensor, named as the
    sg.tensors[y].name = ops.bdfsmn_tensor_name(scope, "out")  # bdfsmn flavor's (found by name)
    first = chain[0]
    keep = [o for i, o in enumerate(sg.operators) if i not in set(chain)]
    keep.insert(first, op)
    sg.operators = keep
    return len(chain)


def stream_layer_ops(m, scope):
    """The op chain of streaming DFSMN layer ``scope`` (``layer_ops``) plus the ops that only
    carry its state on: those whose non-constant inputs all come from the chain and whose
    outputs are all graph outputs (the converter's slice of the memory buffer into the new
    state, named after the signature, not the layer)."""
    sg = m.subgraphs[0]
    chain = layer_ops(m, scope)
    produced = {int(o) for i in chain for o in sg.operators[i].outputs}
    graph_out = {int(t) for t in sg.outputs}
    for i, op in enumerate(sg.operators):
        if i in chain:
            continue
        ins = [int(t) for t in op.inputs if t >= 0 and not _is_const(m, sg.tensors[int(t)])]
        if ins and all(t in produced for t in ins) and \
                all(int(o) in graph_out for o in op.outputs):
            chain.append(i)
    return sorted(chain)


def replace_stream_layer(m, scope, inputs, options):
    """Replace the op chain of streaming DFSMN layer ``scope`` (``stream_layer_ops``) by one
    ``ops.BDFSMN`` in its streaming form: inputs x, the eight constants, and the layer's state
    (a graph input); outputs the layer's output and the new state (a graph output), both the
    chain's own tensors so that readers and the signature are unchanged. ValueError when the
    chain does not read exactly one activation and one state input and write one activation
    and one graph output of the state's shape. Returns the number of ops removed."""
    sg = m.subgraphs[0]
    chain = stream_layer_ops(m, scope)
    if not chain:
        raise ValueError(f"{scope}: no op of this layer in the converter's output")
    inside = set(chain)
    entering, leaving = chain_boundary(m, chain)
    graph_in, graph_out = {int(t) for t in sg.inputs}, {int(t) for t in sg.outputs}
    states = [t for t in entering if t in graph_in]
    xs = [t for t in entering if t not in graph_in]
    new_states = [t for t in leaving if t in graph_out]
    ys = [t for t in leaving if t not in graph_out]
    if len(states) != 1 or len(xs) != 1 or len(new_states) != 1 or len(ys) != 1:
        raise ValueError(
            f"{scope}: the streaming layer's op chain ({len(chain)} ops) reads "
            f"{[_name(sg.tensors[t]) for t in entering]} and writes "
            f"{[_name(sg.tensors[t]) for t in leaving]}; expected an activation and the "
            "layer's state in, an activation and the new state (a graph output) out")
    x, y, st, ns = xs[0], ys[0], states[0], new_states[0]
    shape = lambda t: [int(d) for d in sg.tensors[t].shape]  # noqa: E731
    opts = ops.read_options(options)
    want_state = shape(x)[:1] + [ops.bdfsmn_state_frames(opts["left"], opts["dilation"])] + \
        shape(x)[2:]
    if shape(x) != shape(y) or shape(st) != want_state or shape(ns) != want_state:
        raise ValueError(f"{scope}: x {shape(x)}, y {shape(y)}, state {shape(st)}, new state "
                         f"{shape(ns)}; expected y = x and states {want_state}")
    g = ops.Graph(m)
    g.add_bdfsmn(x, scope, inputs, options, state=st)
    op = sg.operators.pop()
    op.outputs = [y, ns]
    sg.tensors[y].name = ops.bdfsmn_tensor_name(scope, ops.BDFSMN_OUTPUTS[0])
    keep = [o for i, o in enumerate(sg.operators) if i not in inside]
    keep.insert(chain[0], op)
    sg.operators = keep
    return len(chain)


def _const_array(m, t, dtype=np.float32):
    b = m.buffers[t.buffer]
    return np.frombuffer(np.asarray(b.data, np.uint8).tobytes(), dtype).reshape(
        [int(d) for d in t.shape])


def dual_quantize_chains(m):
    """The converter's dual-scale binarizations in subgraph 0 of ModelT ``m``, each the chain

        d = SUB(x, t0); b1 = QUANTIZE(d); v1 = DEQUANTIZE(b1); r = SUB(SUB(x, v1), t1);
        s = MEAN(ABS(r), axes, keep_dims); b2 = QUANTIZE(r)

    (``models.dual_scale.DualScaleActivation`` as LCE's converter lowers it; t0, t1 constant
    [C]); a DEQUANTIZE whose v1 is also read elsewhere (a float memory block) is left in
    place. Returns dicts: ``ops`` (the op indices to replace), ``x``, ``thresholds`` (float32 [2,
    C]), ``outputs`` (tensor indices of b1, b2, s: ``ops.DualQuantizeOutput`` order). A chain
    whose intermediate tensors are read outside it, or whose shapes do not follow the op
    contract, is not one."""
    S = _S()
    sg = m.subgraphs[0]
    names = [_op_name(m, op) for op in sg.operators]
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in op.outputs}
    readers = collections.defaultdict(list)
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            if t >= 0:
                readers[int(t)].append(i)
    graph_out = {int(t) for t in sg.outputs}

    def only_reader(t, name):
        r = readers.get(int(t), [])
        if len(r) != 1 or names[r[0]] != name or int(t) in graph_out:
            return None
        return r[0]

    def vector(t, c):
        tt = sg.tensors[t]
        if not _is_const(m, tt) or tt.type != S.TensorType.FLOAT32 or \
                int(np.prod(tt.shape)) != c or (len(tt.shape) and int(tt.shape[-1]) != c):
            return None
        return _const_array(m, tt).reshape(c)

    chains = []
    for q1, name in enumerate(names):
        if name != ops.QUANTIZE:
            continue
        sub0 = producer.get(int(sg.operators[q1].inputs[0]))
        if sub0 is None or names[sub0] != "SUB" or only_reader(
                sg.operators[sub0].outputs[0], ops.QUANTIZE) != q1:
            continue
        x, t0 = (int(t) for t in sg.operators[sub0].inputs)
        xs = [int(d) for d in sg.tensors[x].shape]
        if _is_const(m, sg.tensors[x]) or not 2 <= len(xs) <= 4:
            continue
        c = xs[-1]
        b1 = int(sg.operators[q1].outputs[0])
        deq = [i for i in readers.get(b1, []) if names[i] == ops.DEQUANTIZE]
        if len(deq) != 1:
            continue
        v1 = int(sg.operators[deq[0]].outputs[0])
        subs = [i for i in readers.get(v1, []) if names[i] == "SUB"
                and [int(t) for t in sg.operators[i].inputs] == [x, v1]]
        if len(subs) != 1:
            continue
        sub1 = subs[0]
        # v1 read elsewhere too (a streaming memory block's float a = v1 + s v2 - t2): the
        # DEQUANTIZE stays, reading the fused op's b1
        keep_deq = len(readers[v1]) > 1 or v1 in graph_out
        sub2 = only_reader(sg.operators[sub1].outputs[0], "SUB")
        if sub2 is None or int(sg.operators[sub2].inputs[0]) != int(sg.operators[sub1].outputs[0]):
            continue
        t1 = int(sg.operators[sub2].inputs[1])
        r = int(sg.operators[sub2].outputs[0])
        users = sorted(readers.get(r, []))
        if len(users) != 2 or {names[i] for i in users} != {"ABS", ops.QUANTIZE} or r in graph_out:
            continue
        ab = next(i for i in users if names[i] == "ABS")
        q2 = next(i for i in users if names[i] == ops.QUANTIZE)
        mean = only_reader(sg.operators[ab].outputs[0], "MEAN")
        if mean is None:
            continue
        s = int(sg.operators[mean].outputs[0])
        axes_t = int(sg.operators[mean].inputs[1])
        opt = sg.operators[mean].builtinOptions
        if not _is_const(m, sg.tensors[axes_t]) or not getattr(opt, "keepDims", False):
            continue
        axes = _const_array(m, sg.tensors[axes_t], np.int32).reshape(-1).tolist()
        try:
            want = ops.dual_quantize_scale_shape(xs, axes)
        except ValueError:
            continue
        th0, th1 = vector(t0, c), vector(t1, c)
        if th0 is None or th1 is None or [int(d) for d in sg.tensors[s].shape] != want:
            continue
        chain_ops = [sub0, q1, sub1, sub2, ab, mean, q2] + ([] if keep_deq else [deq[0]])
        chains.append({"ops": sorted(chain_ops), "x": x,
                       "thresholds": np.stack([th0, th1]).astype(np.float32),
                       "outputs": [b1, int(sg.operators[q2].outputs[0]), s]})
    return chains


def fuse_dual_quantize(m):
    """Replace every chain of ``dual_quantize_chains`` by one ``ops.DUAL_QUANTIZE`` (placed
    where the chain began, writing the chain's b1, b2 and s tensors, so its readers, the
    two ``ops.BCONV2D`` and the MUL by s, are unchanged). Returns the number of chains."""
    S = _S()
    sg = m.subgraphs[0]
    chains = dual_quantize_chains(m)
    g = ops.Graph(m)
    new_ops = {}
    for ch in chains:
        scope = _name(sg.tensors[ch["outputs"][0]]).split(";")[0].rsplit("/", 1)[0]
        th = g.tensor(f"{scope}/{ops.TENSOR_TAG_DUAL}/{ops.DUAL_QUANTIZE_INPUTS[1]}",
                      ch["thresholds"].shape, np.float32, ch["thresholds"])
        op = S.OperatorT()
        op.opcodeIndex = g.custom_opcode(ops.DUAL_QUANTIZE)
        op.inputs, op.outputs = [ch["x"], th], list(ch["outputs"])
        new_ops[min(ch["ops"])] = op
    drop = {i for ch in chains for i in ch["ops"]}
    out = []
    for i, op in enumerate(sg.operators):
        if i in new_ops:
            out.append(new_ops[i])
        if i not in drop:
            out.append(op)
    sg.operators = out
    return len(chains)


def prune(m):
    """Drop tensors no op or signature uses, buffers no tensor / metadata uses, operator codes
    no op uses; store identical constant buffers once. Indices are remapped in place."""
    sg = m.subgraphs[0]
    used = set(int(t) for t in list(sg.inputs) + list(sg.outputs))
    for op in sg.operators:
        for seq in (op.inputs, op.outputs, op.intermediates):
            if seq is not None:
                used |= {int(t) for t in seq if t >= 0}
    tmap = {old: new for new, old in enumerate(sorted(used))}
    sg.tensors = [sg.tensors[i] for i in sorted(used)]

    def remap(seq):
        return None if seq is None else [tmap[int(t)] if t >= 0 else -1 for t in seq]

    for op in sg.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    for sig in m.signatureDefs or []:
        for tm in (sig.inputs or []) + (sig.outputs or []):
            tm.tensorIndex = tmap[int(tm.tensorIndex)]

    # buffers: 0 (the empty sentinel), the kept tensors', the metadata's; equal data once
    bmap, by_data, new_buffers = {0: 0}, {}, [m.buffers[0]]

    def keep_buffer(old, dedupe):
        if old in bmap:
            return bmap[old]
        b = m.buffers[old]
        data = None if b.data is None else bytes(np.asarray(b.data, np.uint8).tobytes())
        if dedupe and data:
            if data in by_data:
                bmap[old] = by_data[data]
                return bmap[old]
        new_buffers.append(b)
        bmap[old] = len(new_buffers) - 1
        if dedupe and data:
            by_data[data] = bmap[old]
        return bmap[old]

    for t in sg.tensors:
        t.buffer = keep_buffer(int(t.buffer), dedupe=not t.isVariable)
    for md in m.metadata or []:
        md.buffer = keep_buffer(int(md.buffer), dedupe=False)
    if m.metadataBuffer is not None:
        m.metadataBuffer = [keep_buffer(int(b), dedupe=False) for b in m.metadataBuffer]
    m.buffers = new_buffers

    codes = sorted({int(op.opcodeIndex) for op in sg.operators})
    cmap = {old: new for new, old in enumerate(codes)}
    m.operatorCodes = [m.operatorCodes[i] for i in codes]
    for op in sg.operators:
        op.opcodeIndex = cmap[int(op.opcodeIndex)]


def assemble(lce_flatbuffer: bytes, layers) -> bytes:
    """LCE's converter output + [(scope, inputs, options)] -> the binary artifact's bytes."""
    m = read_model(lce_flatbuffer)
    if len(m.subgraphs) != 1:
        raise ValueError(f"expected one subgraph in the converter's output, found "
                         f"{len(m.subgraphs)}")
    for scope, inputs, options in layers:
        replace_layer(m, scope, inputs, options)
    left = [i for scope, _, _ in layers for i in layer_ops(m, scope)
            if _op_name(m, m.subgraphs[0].operators[i]) != ops.BDFSMN]
    if left:
        raise ValueError(f"{len(left)} converter ops of the DFSMN layers left after replacing")
    fused = fuse_dual_quantize(m)
    prune(m)
    m.description = (f"binary: LCE converter output ({ops.BCONV2D} front end, its {fused} "
                     f"dual-scale binarizations each one {ops.DUAL_QUANTIZE}) with every "
                     f"DFSMN layer one {ops.BDFSMN}")
    return write_model(m)


def _op_name(m, op) -> str:
    c = m.operatorCodes[op.opcodeIndex]
    if ops.custom_code(c):
        return ops.custom_code(c)
    from models.lce_census import _BUILTIN_NAMES
    return _BUILTIN_NAMES.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?")


def build(model, depth, spec, lce_flatbuffer=None):
    """Keras student at ``depth`` -> (binary .tflite bytes, ``ops.BDFSMN`` layers). Converts the
    student with LCE's converter unless ``lce_flatbuffer`` (the ``lce`` flavor's bytes of the
    same model) is given."""
    if lce_flatbuffer is None:
        from pipeline import export
        lce_flatbuffer = export.convert(model, "lce")
    kw = spec["model_kwargs"]
    layers = bdfsmn.student_layers(model, depth, kw.get("num_layers", 8),
                                   kw.get("channels", 128), kw.get("hidden", 256),
                                   kw.get("left", 2), kw.get("right", 2), kw.get("dilation", 1))
    return assemble(lce_flatbuffer, layers), layers


# -- what the file holds ----------------------------------------------------------------------
def census_check(flatbuffer: bytes, depth: int) -> dict:
    """The artifact's promises from its op census: one ``ops.BDFSMN`` per layer run at ``depth``,
    no float CONV_2D / FULLY_CONNECTED besides conv1 and the classifier, no
    DEPTHWISE_CONV_2D, and every other custom op one of LCE's."""
    from models.lce_census import op_census
    c = op_census(flatbuffer)
    float_ops = {k: int(c.get(k, 0)) for k in FLOAT_WEIGHT_OPS}
    custom = sorted(n for n in c if n.startswith(ops.LCE_PREFIX))
    return {
        ops.BDFSMN: int(c.get(ops.BDFSMN, 0)),
        f"one_{ops.BDFSMN}_per_layer": int(c.get(ops.BDFSMN, 0)) == int(depth),
        "float_weight_ops": float_ops,
        "float_weight_ops_only_conv1_classifier": all(
            float_ops[k] == ALLOWED_FLOAT.get(k, 0) for k in FLOAT_WEIGHT_OPS),
        f"front_end_{ops.BCONV2D}": int(c.get(ops.BCONV2D, 0)),
        f"front_end_{ops.DUAL_QUANTIZE}": int(c.get(ops.DUAL_QUANTIZE, 0)),
        "custom_ops": custom,
        "custom_ops_known": set(custom) <= set(ops.ALL_OPS),
    }


def byte_breakdown(flatbuffer: bytes) -> dict:
    """Where the file's bytes go: constant buffers grouped by role (``ops.BDFSMN`` bit words
    and per-channel rows, ``ops.BCONV2D`` packed filters and their float vectors, float conv1 /
    classifier weights, other constants), metadata buffers, and the rest (flatbuffer tables:
    tensors with their names and shapes, ops, options, alignment padding), plus a per-tensor
    list of the constants (largest first)."""
    m = read_model(flatbuffer)
    sg = m.subgraphs[0]
    role = {}
    for op in sg.operators:
        name = _op_name(m, op)
        for k, t in enumerate(op.inputs):
            if t < 0 or not _is_const(m, sg.tensors[t]):
                continue
            if name == ops.BDFSMN:
                r = (f"{name} bit-packed weights" if k in ops.BDFSMN_BIT_INPUTS else
                     f"{name} per-channel rows")
            elif name == ops.BCONV2D:
                r = (f"{name} bit-packed filters" if k in ops.BCONV2D_BIT_INPUTS else
                     f"{name} multiplier / bias / threshold")
            elif name == ops.DUAL_QUANTIZE:
                r = f"{name} thresholds"
            elif name in ("CONV_2D", "FULLY_CONNECTED"):
                r = f"float {name} {'kernel' if k == 1 else 'bias'}"
            else:
                r = f"{name} constants"
            role.setdefault(int(t), r)
    groups = collections.Counter()
    tensors, seen = [], set()
    for t_i, r in role.items():
        t = sg.tensors[t_i]
        if t.buffer in seen:
            continue
        seen.add(t.buffer)
        n = len(m.buffers[t.buffer].data)
        groups[r] += n
        tensors.append({"tensor": _name(t), "shape": [int(s) for s in t.shape],
                        "role": r, "bytes": n})
    meta = sum(len(m.buffers[md.buffer].data) for md in m.metadata or []
               if m.buffers[md.buffer].data is not None)
    const = sum(groups.values())
    names = sum(len(_name(t)) for t in sg.tensors)
    return {
        "file_bytes": len(flatbuffer), "constants": int(const),
        "constants_by_role": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "metadata_buffers": int(meta),
        "structure_and_padding": int(len(flatbuffer) - const - meta),
        "tensor_name_bytes": int(names), "tensors": len(sg.tensors),
        "ops": len(sg.operators), "buffers": len(m.buffers),
        "constant_tensors": sorted(tensors, key=lambda d: -d["bytes"]),
    }
