"""One-op (and small chain) .tflite models of LCE's ops, built with the TFLite schema's
generated Python code, for tests/test_lce_ops.py: the project's LceQuantize / LceDequantize /
LceBconv2d (lce_kernels/) against larq-compute-engine's own interpreter.

The tensors, option keys and encodings are those LCE 0.16's converter writes (compare
``pretrained/real8/exports/bifsmnv2_lce_d8.tflite``): bit-packed int32 activations
[..., ceil(C / 32)] (LSB first, bit 1 = -1), filters [Cout, Fh, Fw, ceil(Cin / 32)], options a
FlexBuffers map of ints (padding SAME = 0 / VALID = 1, fused_activation_function NONE = 0,
RELU = 1, RELU_N1_TO_1 = 2, RELU6 = 3). Absent operands are tensor index -1. Malformed
models (wrong shapes, dtypes, options) are allowed on purpose.
"""
import numpy as np

PADDING = {"SAME": 0, "VALID": 1}
ACTIVATION = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4}


def _schema():
    from tensorflow.lite.python import schema_py_generated as S
    return S


def packed_words(n):
    return (n + 31) // 32


def pack_bits(neg):
    """bool [..., n] (True = -1) -> int32 [..., ceil(n / 32)], LSB first, zero pad bits."""
    neg = np.asarray(neg, dtype=bool)
    n = neg.shape[-1]
    padded = np.zeros(neg.shape[:-1] + (packed_words(n) * 32,), dtype=np.uint64)
    padded[..., :n] = neg
    bits = padded.reshape(neg.shape[:-1] + (packed_words(n), 32))
    return (bits << np.arange(32, dtype=np.uint64)).sum(axis=-1).astype(np.uint32).view(np.int32)


def unpack_bits(words, n):
    """int32 [..., ceil(n / 32)] -> bool [..., n] (True = bit 1 = -1)."""
    w = np.asarray(words).view(np.uint32).astype(np.uint64)
    bits = (w[..., None] >> np.arange(32, dtype=np.uint64)) & 1
    return bits.reshape(w.shape[:-1] + (-1,))[..., :n].astype(bool)


def bconv2d_options(cin, stride=(1, 1), dilation=(1, 1), padding="VALID", pad_values=1,
                    activation="NONE", drop=(), **override):
    """LceBconv2d's custom_options (FlexBuffers map of ints, as LCE's converter writes);
    ``override`` replaces values by key, ``drop`` leaves keys out."""
    from flatbuffers import flexbuffers
    opts = {"channels_in": int(cin), "stride_height": int(stride[0]),
            "stride_width": int(stride[1]), "dilation_height_factor": int(dilation[0]),
            "dilation_width_factor": int(dilation[1]),
            "padding": PADDING.get(padding, padding),
            "pad_values": int(pad_values),
            "fused_activation_function": ACTIVATION.get(activation, activation)}
    opts.update(override)
    opts = {k: v for k, v in opts.items() if k not in drop}
    return bytes(flexbuffers.Dumps(opts))


class Graph:
    """Tensors, constant buffers and ops of one subgraph; ``build`` returns the .tflite."""

    def __init__(self):
        S = _schema()
        self.S = S
        self.tensors, self.buffers, self.ops, self.codes = [], [S.BufferT()], [], []

    def tensor(self, name, shape, dtype, data=None, scale=None, zero_point=None):
        S = self.S
        t = S.TensorT()
        t.name, t.shape = name, [int(s) for s in shape]
        t.type = {np.dtype(np.float32): S.TensorType.FLOAT32,
                  np.dtype(np.int32): S.TensorType.INT32,
                  np.dtype(np.int8): S.TensorType.INT8,
                  np.dtype(np.bool_): S.TensorType.BOOL,
                  np.dtype(np.int64): S.TensorType.INT64}[np.dtype(dtype)]
        t.buffer = 0
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).copy()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(scale)], [int(zero_point or 0)]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name, inputs, outputs, options=None):
        S = self.S
        if name not in self.codes:
            self.codes.append(name)
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.codes.index(name), list(inputs), list(outputs)
        if options:
            op.customOptions = np.frombuffer(options, np.uint8).copy()
            op.customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
        self.ops.append(op)

    def build(self, inputs, outputs):
        from pipeline.bdfsmn import write_model
        S = self.S
        codes = []
        for name in self.codes:
            c = S.OperatorCodeT()
            c.builtinCode = c.deprecatedBuiltinCode = S.BuiltinOperator.CUSTOM
            c.customCode, c.version = name, 1
            codes.append(c)
        sg = S.SubGraphT()
        sg.tensors, sg.operators, sg.name = self.tensors, self.ops, "main"
        sg.inputs, sg.outputs = list(inputs), list(outputs)
        model = S.ModelT()
        model.version, model.description = 3, "LCE op test model"
        model.operatorCodes, model.subgraphs, model.buffers = codes, [sg], self.buffers
        return write_model(model)


def quantize_model(shape, dtype=np.float32, scale=None, zero_point=None, out_shape=None,
                   out_dtype=np.int32):
    g = Graph()
    x = g.tensor("x", shape, dtype, scale=scale, zero_point=zero_point)
    out_shape = out_shape if out_shape is not None else (*shape[:-1], packed_words(shape[-1]))
    y = g.tensor("y", out_shape, out_dtype)
    g.op("LceQuantize", [x], [y])
    return g.build([x], [y])


def dequantize_model(shape, dtype=np.float32, scale=None, zero_point=None, in_shape=None,
                     in_dtype=np.int32):
    """LceDequantize to `shape` (the unpacked output shape, which the model must give)."""
    g = Graph()
    in_shape = in_shape if in_shape is not None else (*shape[:-1], packed_words(shape[-1]))
    x = g.tensor("x", in_shape, in_dtype)
    y = g.tensor("y", shape, dtype, scale=scale, zero_point=zero_point)
    g.op("LceDequantize", [x], [y])
    return g.build([x], [y])


def bconv2d_model(in_shape, filt, options, multiplier=None, bias=None, thresholds=None,
                  out_dtype=np.float32, out_shape=None, const=True, num_inputs=5, in_dtype=np.int32):
    """One LceBconv2d: graph input [B, H, W, words] int32, constant operands; absent
    operands (None) are index -1. out_shape: what the model states (the op resizes it)."""
    g = Graph()
    x = g.tensor("x", in_shape, in_dtype)
    graph_inputs = [x]

    def operand(name, arr):
        if arr is None:
            return -1
        arr = np.asarray(arr)
        idx = g.tensor(name, arr.shape, arr.dtype, arr if const else None)
        if not const:
            graph_inputs.append(idx)
        return idx

    ins = [x, operand("filter", filt), operand("post_activation_multiplier", multiplier),
           operand("post_activation_bias", bias), operand("output_threshold", thresholds)]
    y = g.tensor("y", out_shape if out_shape is not None else [1, 1, 1, 1], out_dtype)
    g.op("LceBconv2d", ins[:num_inputs], [y], options)
    return g.build(graph_inputs, [y])


def chain_model(shape, layers):
    """float [B, H, W, C] -> LceQuantize -> LceBconv2d ... -> (LceDequantize if the last conv
    is bit-packed) -> out. layers: dicts with filt, options, and multiplier/bias (float out)
    or thresholds (bit-packed out, feeding the next conv)."""
    g = Graph()
    x = g.tensor("x", shape, np.float32)
    cur = g.tensor("q", (*shape[:-1], packed_words(shape[-1])), np.int32)
    g.op("LceQuantize", [x], [cur])
    channels = shape[-1]
    for i, L in enumerate(layers):
        filt = np.asarray(L["filt"])
        bitpacked = L.get("thresholds") is not None
        ins = [cur, g.tensor(f"f{i}", filt.shape, np.int32, filt)]
        if bitpacked:
            th = np.asarray(L["thresholds"], np.int32)
            ins += [-1, -1, g.tensor(f"t{i}", th.shape, np.int32, th)]
        else:
            m = np.asarray(L["multiplier"], np.float32)
            b = np.asarray(L["bias"], np.float32)
            ins += [g.tensor(f"m{i}", m.shape, np.float32, m),
                    g.tensor(f"b{i}", b.shape, np.float32, b), -1]
        channels = filt.shape[0]
        cur_out = g.tensor(f"y{i}", [1, 1, 1, 1], np.int32 if bitpacked else np.float32)
        g.op("LceBconv2d", ins, [cur_out], L["options"])
        cur = cur_out
    if layers and layers[-1].get("thresholds") is not None:
        raise ValueError("end the chain with a float-output conv")
    del channels
    return g.build([x], [cur])
