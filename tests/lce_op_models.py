"""One-op (and small chain) .tflite models of LCE's ops, built with the TFLite schema's
generated Python code, for tests/test_lce_ops.py: the project's ``ops.QUANTIZE`` /
``ops.DEQUANTIZE`` / ``ops.BCONV2D`` (lce_kernels/) against larq-compute-engine's own
interpreter; ``dual_quantize_model`` the project's ``ops.DUAL_QUANTIZE`` (no LCE counterpart:
checked against ``pipeline.kernel_ref.dual_quantize``).

The tensors, option keys and encodings are those LCE 0.16's converter writes (compare
``pretrained/real8/exports/bifsmnv2_lce_d8.tflite``), as the op contract states them
(``lce_kernels.ops``: bit-packed int32 activations [..., ceil(C / 32)] (LSB first, bit 1 =
-1), filters [Cout, Fh, Fw, ceil(Cin / 32)], options a FlexBuffers map of ints with
``ops.PADDING`` / ``ops.FUSED_ACTIVATION`` values). Absent operands are tensor index -1.
Malformed models (wrong shapes, dtypes, options) are allowed on purpose.
"""
import numpy as np

from lce_kernels import ops

PADDING = ops.PADDING
ACTIVATION = ops.FUSED_ACTIVATION
packed_words = ops.packed_words
pack_bits = ops.pack_bits          # int32 words
unpack_bits = ops.unpack_bits
bconv2d_options = ops.bconv2d_options


def _schema():
    return ops.schema()


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
        from pipeline.tflite_metadata import write_model
        S = self.S
        codes = [ops.custom_opcode(name) for name in self.codes]
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
    g.op(ops.QUANTIZE, [x], [y])
    return g.build([x], [y])


def dequantize_model(shape, dtype=np.float32, scale=None, zero_point=None, in_shape=None,
                     in_dtype=np.int32):
    """``ops.DEQUANTIZE`` to `shape` (the unpacked output shape, which the model must give)."""
    g = Graph()
    in_shape = in_shape if in_shape is not None else (*shape[:-1], packed_words(shape[-1]))
    x = g.tensor("x", in_shape, in_dtype)
    y = g.tensor("y", shape, dtype, scale=scale, zero_point=zero_point)
    g.op(ops.DEQUANTIZE, [x], [y])
    return g.build([x], [y])


def bconv2d_model(in_shape, filt, options, multiplier=None, bias=None, thresholds=None,
                  out_dtype=np.float32, out_shape=None, const=True, num_inputs=5, in_dtype=np.int32):
    """One ``ops.BCONV2D``: graph input [B, H, W, words] int32, constant operands; absent
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

    names = ops.BCONV2D_INPUTS
    ins = [x, operand(names[1], filt), operand(names[2], multiplier), operand(names[3], bias),
           operand(names[4], thresholds)]
    y = g.tensor("y", out_shape if out_shape is not None else [1, 1, 1, 1], out_dtype)
    g.op(ops.BCONV2D, ins[:num_inputs], [y], options)
    return g.build(graph_inputs, [y])


def chain_model(shape, layers):
    """float [B, H, W, C] -> quantize -> binary conv ... -> (dequantize if the last conv
    is bit-packed) -> out. layers: dicts with filt, options, and multiplier/bias (float out)
    or thresholds (bit-packed out, feeding the next conv)."""
    g = Graph()
    x = g.tensor("x", shape, np.float32)
    cur = g.tensor("q", (*shape[:-1], packed_words(shape[-1])), np.int32)
    g.op(ops.QUANTIZE, [x], [cur])
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
        g.op(ops.BCONV2D, ins, [cur_out], L["options"])
        cur = cur_out
    if layers and layers[-1].get("thresholds") is not None:
        raise ValueError("end the chain with a float-output conv")
    del channels
    return g.build([x], [cur])


def dual_quantize_model(x_shape, thresholds, scale_shape, out_shapes=None, out_dtypes=None,
                        const=True, num_inputs=2, num_outputs=3, in_dtype=np.float32,
                        options=None):
    """One ``ops.DUAL_QUANTIZE``: graph input x, constant thresholds [2, C] (``const=False``:
    a graph input); outputs b1, b2 (int32 words) and s (``scale_shape``). ``out_shapes`` /
    ``out_dtypes`` override what the model states (malformed on purpose)."""
    g = Graph()
    x = g.tensor(ops.DUAL_QUANTIZE_INPUTS[0], x_shape, in_dtype)
    th = np.asarray(thresholds)
    t = g.tensor(ops.DUAL_QUANTIZE_INPUTS[1], th.shape, th.dtype, th if const else None)
    words = (*x_shape[:-1], packed_words(x_shape[-1]))
    shapes = list(out_shapes or (words, words, scale_shape))
    dtypes = list(out_dtypes or (np.int32, np.int32, np.float32))
    outs = [g.tensor(n, s, d) for n, s, d in zip(ops.DUAL_QUANTIZE_OUTPUTS, shapes, dtypes)]
    g.op(ops.DUAL_QUANTIZE, [x, t][:num_inputs], outs[:num_outputs], options)
    return g.build([x] if const else [x, t], outs[:num_outputs])
