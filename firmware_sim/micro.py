"""Microcontroller view: the int8 teacher on TensorFlow Lite Micro, the binary model's memory.

Reads: --models (.tflite files, which describe themselves; builtin-op models run in TFLM,
  models with custom ops get the memory budget), the clips of --split in --data_dir (for the
  TFLM run).
Writes: nothing; prints tables and one JSON line; the full detail (--json_out).

    python -m firmware_sim.micro                          # d8 int8 teacher + d8 bdfsmn student
    E=pretrained/real8/exports
    python -m firmware_sim.micro --models $E/dfsmn_int8_d8.tflite,$E/dfsmn_int8_d4.tflite \\
        --models $E/bifsmnv2_bdfsmn_d8.tflite --models $E/bifsmnv2_lce_d8.tflite \\
        --data_dir ../shared/data/speech_commands_real8 --split testing [--max_clips 100]
    python -m firmware_sim.micro --models FILE   # a binary model: budget only, no data

``--models`` (comma list or repeated) holds both kinds: a model whose ops are all TFLite
builtins (the int8 teacher) gets the TFLM run, one with custom ops (``ops.BDFSMN``, LCE's:
the binary exports) the memory budget and a TFLM attempt (the deprecated ``--int8_model`` /
``--binary_model`` add to the same list).

1. TFLM RUN (builtin-op models, e.g. the int8 teacher). The model runs in TensorFlow Lite
   Micro's Python interpreter (``tflite-micro`` from PyPI: the TFLM C++ runtime with its
   reference kernels and the RecordingMicroAllocator):
   - minimal arena: the smallest ``arena_size`` with which the interpreter is created and
     ``invoke()`` succeeds, found by bisection to the byte (creation fails with "TFLM failed
     to allocate tensors" below it), then VERIFIED: every clip below runs with exactly that
     arena, and one byte less and 90 % of it are shown to fail. It is larger than the
     recorder's "Arena allocation total": the greedy memory planner needs temporary space
     while it plans, which the final layout does not show.
   - the recorder's breakdown (``print_allocations()``, C++ output captured from the process'
     file descriptors 1/2): head (the planned non-persistent tensors: activations + kernel
     scratch) and tail (persistent: TfLiteEvalTensor structs, per-channel quantization data,
     node structs).
   - outputs against TensorFlow Lite on the SAME int8 input tensors: test clips (``--split``,
     ``--max_clips``) through the project's own pipeline (pipeline.input_pipeline +
     pipeline.features, exactly what pipeline.evaluate feeds; labels from the model's own
     description, pipeline.tflite_metadata), quantized with the model's input scale / zero point as
     pipeline.predictors.TFLiteRunner does; TFLite = ``tf.lite.Interpreter`` as evaluate runs
     it (optimized kernels + default delegate XNNPACK), without the default delegates, and
     with its reference kernels (``OpResolverType.BUILTIN_REF``). Reported per pair with
     TFLM: max |int8 output difference|, fraction of clips with identical int8 outputs, top-1
     agreement; and the accuracy of each.
   TFLM cannot run the binary models: ``ops.BDFSMN`` (and the LCE ops of the lce flavor) are custom
   ops that need TFLM's C++ headers and a native build of the runtime (no Python registration);
   the bdfsmn export also holds SIGN, which this TFLM build has no kernel for. The tool tries
   each binary model in TFLM and prints the error TFLM gives. The project's FIRMWARE
   (firmware_sim/firmware: TFLM built from the pinned sources with lce_kernels/tflm) runs them:
   ``firmware_arena`` finds each binary model's minimal arena there (bisection to the byte, as
   for the int8 teacher) and reports the heap its ops hold outside the arena, the flash, and
   the arena's head / tail split from TFLM's RecordingMicroAllocator (``firmware_recording``).

2. MEMORY BUDGET (models with custom ops; the int8 models get the same analysis for comparison),
   from the flatbuffer alone (``tensorflow.lite.python.schema_py_generated`` via
   pipeline.bdfsmn.read_model; no interpreter):
   - weights: bytes of the constant buffers (each buffer once, as models.lce_census), split
     into bit-packed binary weights (``ops.BDFSMN_BIT_INPUTS``: mem_w / pw1_w / pw2_w; the
     filters of ``ops.BCONV2D``),
     per-channel vectors of the binary ops (thresholds, folded BN multipliers / biases, PReLU
     slopes), and the rest by where it is used: front end (ops before the first DFSMN layer
     op), backbone (other constants of the DFSMN layers: float / int8 kernels of the teacher
     or the lce flavor's float memory block), classifier (ops after the last layer op). Float
     kernels whose every output channel holds one magnitude (sign(w) * scale: binary layers
     converted as float ops) are counted again as "binary kernels held as float", with what
     they would take bit-packed (bits + one float per channel).
   - peak activations: tensor lifetimes in op order: a non-constant tensor is live from the
     op that produces it (graph inputs: from op 0) to the last op that reads it (graph
     outputs: to the end); at every op the live bytes are summed; the peak and its op are
     reported (and the peak within the front end / backbone / classifier). Every live tensor
     is counted separately, so this is an UPPER bound for a planner that shares buffers (the
     TFLite arena planner and TFLM can run RESHAPE and some element-wise ops in place) and a
     LOWER bound for one that cannot pack perfectly (fragmentation); for the int8 teacher it
     is compared with the TFLM arena's head section (the planned tensors).
   - ``ops.BDFSMN`` scratch (lce_kernels/core/bdfsmn.h, Layer::Prepare) per layer, from the op's
     options (C, H, left, right) and input shape (T): 6 bit planes (mem_b1, mem_b2, pw1_b1,
     pw1_b2: T * PaddedWords64(C) uint64; pw2_b1, pw2_b2: T * PaddedWords64(H) uint64;
     PaddedWords64(n) = 2 * ceil(n / 128)), 3 * T floats (mem_s, pw1_s, pw2_s), m: T * C
     floats, h: T * H floats. In the TFLite op every op instance owns its workspace (heap, kept
     between invocations: the sum over layers); a TFLM port would request it as a scratch
     buffer, planned per op (peak = max over ops of live tensors + that op's scratch).
   - what ``ops.BDFSMN`` copies at Init (Layer::Init): the weights repacked to uint64 rows padded
     to 128 bits (mem K * wc, pw1 H * wc, pw2 C * wh words, wc = PaddedWords64(C),
     wh = PaddedWords64(H)) and its 16 float vectors padded to multiples of 4: heap in the
     TFLite op, next to the flatbuffer's own copy. A TFLM port would not need the copy (read
     the weights from flash: for C, H multiples of 128 the stored int32 rows already are the
     padded uint64 rows on a little-endian core).

Output: tables, notes, and ONE JSON line last (also written to --json_out).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import flags, logging

from lce_kernels import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTS = os.path.join("pretrained", "real8", "exports")
DEFAULT_INT8 = os.path.join(EXPORTS, "dfsmn_int8_d8.tflite")
DEFAULT_BINARY = os.path.join(EXPORTS, "bifsmnv2_bdfsmn_d8.tflite")
DEFAULT_DATA = os.path.join("..", "shared", "data", "speech_commands_real8")
LAYER_SCOPE = "dfsmn/layer"           # tensor names of the DFSMN layers (every flavor)
#: which constant inputs of a binary op are bit-packed weights, which per-channel vectors
BINARY_INPUTS = {ops.BDFSMN: (ops.BDFSMN_BIT_INPUTS, ops.BDFSMN_VECTOR_INPUTS),
                 ops.BCONV2D: (ops.BCONV2D_BIT_INPUTS, ops.BCONV2D_VECTOR_INPUTS)}
KERNEL_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": 3}  # out-channel axis
ARENA_MAX = 1 << 28

FLAGS = flags.FLAGS


class MicroError(ValueError):
    """Bad input to the tool (missing model, no sidecar, label mismatch...)."""


# ============================================================================ flatbuffer model
_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "FLOAT64": 8, "INT32": 4,
               "UINT32": 4, "INT64": 8, "UINT64": 8, "INT16": 2, "UINT16": 2, "INT8": 1,
               "UINT8": 1, "BOOL": 1, "COMPLEX64": 8, "COMPLEX128": 16, "INT4": 0.5}


@dataclasses.dataclass
class Tensor:
    index: int
    name: str
    shape: List[int]
    dtype: str
    nbytes: int
    buffer: int
    const: bool
    variable: bool = False


@dataclasses.dataclass
class Op:
    index: int
    name: str
    inputs: List[int]
    outputs: List[int]
    custom_options: bytes = b""


@dataclasses.dataclass
class Graph:
    tensors: List[Tensor]
    ops: List[Op]
    inputs: List[int]
    outputs: List[int]
    buffer_bytes: Dict[int, int]           # constant buffer -> bytes
    buffer_data: Dict[int, np.ndarray]     # constant buffer -> uint8 data


def load_graph(flatbuffer: bytes, subgraph: int = 0) -> Graph:
    """The first subgraph of a .tflite, read with TensorFlow's flatbuffer schema module."""
    from pipeline.bdfsmn import read_model   # (pipeline first: it selects Keras 2)
    from tensorflow.lite.python import schema_py_generated as S
    from pipeline.model_verify import verify_model
    verify_model(flatbuffer, "model")                   # before the Python reader parses it
    m = read_model(flatbuffer)
    type_names = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    sg = m.subgraphs[subgraph]
    buffer_bytes, buffer_data = {}, {}
    used = {int(t.buffer) for t in sg.tensors or []}   # not metadata buffers
    for b, buf in enumerate(m.buffers or []):
        n = len(buf.data) if buf.data is not None else 0
        if b > 0 and b in used and (n or buf.size):
            buffer_bytes[b] = int(n or buf.size)
            if n:
                buffer_data[b] = np.asarray(buf.data, np.uint8)
    tensors = []
    for i, t in enumerate(sg.tensors or []):
        shape = [int(s) for s in (t.shape if t.shape is not None else [])]
        dtype = type_names.get(t.type, str(t.type))
        nbytes = int(np.ceil(np.prod(shape, dtype=np.int64) * _TYPE_BYTES.get(dtype, 4)))
        tensors.append(Tensor(i, t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                              shape, dtype, nbytes, int(t.buffer), int(t.buffer) in buffer_bytes,
                              bool(t.isVariable)))
    names = []
    for c in m.operatorCodes or []:
        if c.customCode:
            names.append(c.customCode.decode() if isinstance(c.customCode, bytes)
                         else str(c.customCode))
        else:
            code = max(c.builtinCode, c.deprecatedBuiltinCode)
            names.append(op_names.get(code, f"BUILTIN_{code}"))
    ops = []
    for i, o in enumerate(sg.operators or []):
        opts = bytes(np.asarray(o.customOptions, np.uint8).tobytes()) \
            if o.customOptions is not None else b""
        ops.append(Op(i, names[o.opcodeIndex], [int(v) for v in (o.inputs if o.inputs is not None
                                                                   else [])],
                      [int(v) for v in (o.outputs if o.outputs is not None else [])], opts))
    return Graph(tensors, ops, [int(v) for v in sg.inputs], [int(v) for v in sg.outputs],
                 buffer_bytes, buffer_data)


# ============================================================================ lifetimes
def lifetimes(g: Graph) -> Dict[int, tuple]:
    """{tensor: (first op, last op)} of every non-constant tensor: from its producer (graph
    inputs and variables: op 0) to its last reader (graph outputs and variables: last op)."""
    last_op = max(len(g.ops) - 1, 0)
    span = {}
    for t in g.inputs:
        span[t] = [0, 0]
    for t in g.tensors:
        if t.variable:
            span[t.index] = [0, last_op]
    for op in g.ops:
        for t in op.inputs:
            if t < 0 or g.tensors[t].const:
                continue
            s = span.setdefault(t, [0, op.index])   # read before any producer: an input
            s[1] = max(s[1], op.index)
        for t in op.outputs:
            s = span.setdefault(t, [op.index, op.index])
            s[1] = max(s[1], op.index)
    for t in g.outputs:
        if t in span:
            span[t][1] = last_op
    return {t: tuple(v) for t, v in span.items()}


def live_profile(g: Graph, extra: Optional[Sequence[int]] = None) -> dict:
    """Live bytes at every op (plus ``extra[i]`` bytes of op-private scratch), the peak, its
    op and the tensors live there."""
    span = lifetimes(g)
    n = len(g.ops)
    live = np.zeros(n, np.int64)
    for t, (a, b) in span.items():
        live[a:b + 1] += g.tensors[t].nbytes
    total = live + (np.asarray(extra, np.int64) if extra is not None else 0)
    i = int(np.argmax(total)) if n else 0
    at_peak = sorted((t for t, (a, b) in span.items() if a <= i <= b),
                     key=lambda t: -g.tensors[t].nbytes)
    return {"per_op": [int(v) for v in total], "tensors_only": [int(v) for v in live],
            "peak": int(total[i]) if n else 0, "peak_op": i,
            "peak_op_name": g.ops[i].name if n else None,
            "peak_tensors": [(g.tensors[t].name, g.tensors[t].shape, g.tensors[t].dtype,
                              g.tensors[t].nbytes) for t in at_peak]}


def sections(g: Graph) -> List[str]:
    """'front_end' / 'backbone' / 'classifier' per op: the backbone is the op range from the
    first to the last op writing a tensor of a DFSMN layer (name contains 'dfsmn/layer')."""
    layer_ops = [op.index for op in g.ops
                 if any(LAYER_SCOPE in g.tensors[t].name for t in op.outputs)]
    if not layer_ops:
        return ["front_end"] * len(g.ops)
    a, b = min(layer_ops), max(layer_ops)
    return ["front_end" if i < a else "classifier" if i > b else "backbone"
            for i in range(len(g.ops))]


# ============================================================================ ops.BDFSMN
def padded_words64(n: int) -> int:
    """lce_kernels/core/bdfsmn.h PaddedWords64: uint64 words of a row padded to 128 bits."""
    return 2 * ((n + 127) // 128)


def round4(n: int) -> int:
    return (n + 3) // 4 * 4


def bdfsmn_scratch(T: int, C: int, H: int) -> dict:
    """Bytes of the Workspace Layer::Prepare sizes for T frames."""
    wc, wh = padded_words64(C), padded_words64(H)
    planes = 8 * T * (4 * wc + 2 * wh)         # mem_b1/b2, pw1_b1/b2 [T][wc]; pw2_b1/b2 [T][wh]
    scales = 4 * 3 * T                         # mem_s, pw1_s, pw2_s
    m, h = 4 * T * C, 4 * T * H
    return {"bit_planes": planes, "frame_scales": scales, "m": m, "h": h,
            "total": planes + scales + m + h}


def bdfsmn_init_copy(K: int, C: int, H: int) -> dict:
    """Bytes Layer::Init copies: repacked uint64 weights + 16 float vectors (padded to 4)."""
    wc, wh = padded_words64(C), padded_words64(H)
    words = 8 * (K * wc + H * wc + C * wh)
    vectors = 4 * (11 * round4(C) + 5 * round4(H))  # 11 of length C, 5 of length H
    return {"weights": words, "vectors": vectors, "total": words + vectors}


def bdfsmn_ops(g: Graph) -> List[dict]:
    """C, H, left, right, dilation (options) and T (input shape) of every ``ops.BDFSMN``."""
    out = []
    for op in g.ops:
        if op.name != ops.BDFSMN:
            continue
        o = ops.read_options(op.custom_options)
        shape = g.tensors[op.inputs[0]].shape
        T = shape[0] if len(shape) == 2 else shape[1]   # [T, C] / [B, T, C] / [B, T, 1, C]
        C, H, K = o["channels"], o["hidden"], o["left"] + o["right"] + 1
        out.append({"op": op.index, "layer": ops.bdfsmn_scope(g.tensors[op.outputs[0]].name),
                    "T": int(T), "C": C, "H": H, "left": o["left"], "right": o["right"],
                    "dilation": o.get("dilation", 1), "scratch": bdfsmn_scratch(int(T), C, H),
                    "init_copy": bdfsmn_init_copy(K, C, H)})
    return out


# ============================================================================ weights
def binary_as_float(g: Graph, op: Op) -> Optional[dict]:
    """A float32 kernel whose every output channel holds one magnitude (sign(w) * scale, a
    binary layer converted as a float op): its bytes and bit-packed size, else None."""
    if op.name not in KERNEL_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
        return None
    t = g.tensors[op.inputs[1]]
    if not t.const or t.dtype != "FLOAT32" or t.buffer not in g.buffer_data:
        return None
    w = np.frombuffer(g.buffer_data[t.buffer].tobytes(), np.float32).reshape(t.shape)
    w = np.moveaxis(np.abs(w), KERNEL_OPS[op.name], 0).reshape(t.shape[KERNEL_OPS[op.name]], -1)
    if w.shape[1] < 4 or not np.allclose(w, w.max(1, keepdims=True), rtol=1e-5, atol=0):
        return None
    rows, n = w.shape
    return {"tensor": t.name, "shape": t.shape, "bytes": t.nbytes,
            "packed_bytes": rows * 4 * ((n + 31) // 32) + 4 * rows}


def weight_split(g: Graph) -> dict:
    """Constant bytes (each buffer once) by role; see the module doc."""
    sec = sections(g)
    role = {}
    for op in g.ops:
        bits, vectors = BINARY_INPUTS.get(op.name, ((), ()))
        for k, t in enumerate(op.inputs):
            if t < 0 or not g.tensors[t].const:
                continue
            b = g.tensors[t].buffer
            r = "binary_bits" if k in bits else "binary_vectors" if k in vectors else sec[op.index]
            if r.startswith("binary") or b not in role:   # a binary role wins, else first use
                role[b] = r
    out = {k: 0 for k in ("binary_bits", "binary_vectors", "front_end", "backbone",
                          "classifier", "unused")}
    by_type = {}
    for b, n in g.buffer_bytes.items():
        out[role.get(b, "unused")] += n
    for t in g.tensors:
        if t.const and t.buffer in g.buffer_bytes and t.buffer not in by_type:
            by_type[t.buffer] = t.dtype
    types = {}
    for b, dt in by_type.items():
        types[dt] = types.get(dt, 0) + g.buffer_bytes[b]
    out["total"] = int(sum(g.buffer_bytes.values()))
    out["by_type"] = types
    seen, bf = set(), []
    for op in g.ops:
        r = binary_as_float(g, op)
        if r and r["tensor"] not in seen:
            seen.add(r["tensor"])
            bf.append(dict(r, section=sec[op.index], op=op.name))
    out["binary_kernels_as_float"] = bf
    return out


def budget(path: str) -> dict:
    """Weights, peak activations and ``ops.BDFSMN`` scratch of one .tflite (module doc,
    part 2)."""
    with open(path, "rb") as f:
        flatbuffer = f.read()
    from pipeline.model_verify import verify_model
    verify_model(flatbuffer, path)  # (load_graph verifies too; this names the file)
    g = load_graph(flatbuffer)
    layers = bdfsmn_ops(g)
    scratch_at = [0] * len(g.ops)
    for L in layers:
        scratch_at[L["op"]] = L["scratch"]["total"]
    act = live_profile(g)
    port = live_profile(g, scratch_at)
    sec = sections(g)
    by_section = {}
    for s in ("front_end", "backbone", "classifier"):
        idx = [i for i, v in enumerate(sec) if v == s]
        if idx:
            j = max(idx, key=lambda i: port["per_op"][i])
            by_section[s] = {"peak": port["per_op"][j], "op": j, "op_name": g.ops[j].name,
                             "tensors_only": act["tensors_only"][j]}
    census = {}
    for op in g.ops:
        census[op.name] = census.get(op.name, 0) + 1
    res = {"model": path, "file_bytes": len(flatbuffer), "ops": len(g.ops), "op_census": census,
           "weights": weight_split(g),
           "activations": {k: act[k] for k in ("peak", "peak_op", "peak_op_name",
                                                "peak_tensors")},
           "io_bytes": {"input": sum(g.tensors[t].nbytes for t in g.inputs),
                        "output": sum(g.tensors[t].nbytes for t in g.outputs)},
           "by_section": by_section, "per_op_live": act["tensors_only"]}
    if layers:
        per = [L["scratch"]["total"] for L in layers]
        copy = [L["init_copy"]["total"] for L in layers]
        res["bdfsmn"] = {
            "layers": layers, "count": len(layers),
            "scratch_per_layer": per[0] if len(set(per)) == 1 else per,
            "scratch_sum": int(sum(per)), "scratch_max": int(max(per)),
            "init_copy_sum": int(sum(copy)),
            "tflite_op_heap": int(sum(per) + sum(copy)),
            "peak_with_scratch": {"peak": port["peak"], "op": port["peak_op"],
                                  "op_name": port["peak_op_name"]}}
    return res


# ============================================================================ TFLM
@contextlib.contextmanager
def captured_fds(fds=(1, 2)):
    """Capture what C/C++ code writes to file descriptors ``fds`` (TFLM prints there):
    ``with captured_fds() as box: ...``; box['text'] holds it afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    box = {"text": ""}
    saved = [os.dup(fd) for fd in fds]
    with tempfile.TemporaryFile() as tmp:
        try:
            for fd in fds:
                os.dup2(tmp.fileno(), fd)
            yield box
        finally:
            try:
                ctypes.CDLL(None).fflush(None)   # C stdio buffers, before the fds go back
            except (OSError, AttributeError):
                pass
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, s in zip(fds, saved):
                os.dup2(s, fd)
                os.close(s)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


def tflm_version() -> str:
    try:
        import importlib.metadata as md
        return md.version("tflite_micro")
    except Exception:  # pragma: no cover
        return "unknown"


def tflm_interpreter(model_bytes: bytes, arena: int):
    from pipeline.model_verify import verify_model
    verify_model(model_bytes, "model")                  # TFLM does not verify the flatbuffer
    from tflite_micro.python.tflite_micro import runtime
    return runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena))


def tflm_try(model_bytes: bytes, arena: int, x=None):
    """Create a TFLM interpreter with ``arena`` bytes and invoke it once (on ``x`` or zeros).
    Returns (ok, TFLM's own messages)."""
    with captured_fds() as box:
        try:
            it = tflm_interpreter(model_bytes, arena)
            d = it.get_input_details(0)
            it.set_input(np.zeros(d["shape"], d["dtype"]) if x is None else x, 0)
            it.invoke()
            ok = True
        except RuntimeError as e:
            ok, err = False, str(e)
    text = box["text"].strip()
    return ok, text if ok else (text + "\n" + err).strip()


class ArenaProbe:
    """TFLM trials (``tflm_try``) in a child process. TFLM crashes (SIGSEGV) on some arenas
    that are too small instead of returning an error (seen with the d4 teacher at 17,000 B:
    a failed tail allocation it does not propagate), which must not take the tool down: the
    child answers one arena size per line and is restarted after a crash.

    ``probe(arena) -> {'ok': bool, 'crashed': bool, 'message': str}``."""

    def __init__(self, model_bytes: bytes, x=None):
        self._dir = tempfile.mkdtemp(prefix="tflm_probe_")
        self._model = os.path.join(self._dir, "model.tflite")
        with open(self._model, "wb") as f:
            f.write(model_bytes)
        self._x = os.path.join(self._dir, "x.npy")
        if x is not None:
            np.save(self._x, np.asarray(x))
        self.crashes, self.calls, self.proc = [], 0, None

    def _start(self):
        import subprocess
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from firmware_sim.micro import _probe_main; _probe_main()",
             self._model, self._x], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)

    def __call__(self, arena: int) -> dict:
        self.calls += 1
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(f"{int(arena)}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if line:
            return dict(json.loads(line), crashed=False)
        rc = self.proc.wait()
        self.proc = None
        self.crashes.append(int(arena))
        return {"ok": False, "crashed": True, "message": f"TFLM crashed (exit {rc})"}

    def close(self):
        import shutil
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _probe_main():
    """The ArenaProbe child: argv model path, input .npy path; reads arena sizes from stdin,
    answers one JSON line each on the original stdout (TFLM's messages are captured)."""
    model_path, x_path = sys.argv[1], sys.argv[2]
    with open(model_path, "rb") as f:
        model = f.read()
    x = np.load(x_path) if os.path.exists(x_path) else None
    out = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        ok, msg = tflm_try(model, int(line), x)
        out.write(json.dumps({"ok": ok, "message": _last_lines(msg, 3)}) + "\n")
        out.flush()


def min_arena(model_bytes: bytes, x=None, hi: Optional[int] = None, scan_above=32) -> dict:
    """Smallest arena (bytes) with which the interpreter is created and invoke() works:
    doubling to a working size, then bisection to the byte (a crash counts as a failure);
    the result is checked again, one byte less and 90 % are shown to fail, and the next
    ``scan_above`` sizes to work (the tail is allocated down from the arena's end, so its
    alignment padding changes with the size)."""
    with ArenaProbe(model_bytes, x) as probe:
        hi = hi or max(16 * 1024, 4 * len(model_bytes))
        while not probe(hi)["ok"]:
            if hi >= ARENA_MAX:
                raise MicroError(f"TFLM fails even with a {ARENA_MAX}-byte arena: "
                                 f"{probe(hi)['message']}")
            hi *= 2
        lo, steps = 0, 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            steps += 1
            if probe(mid)["ok"]:
                hi = mid
            else:
                lo = mid
        at_min, below, p90 = probe(hi), probe(hi - 1), probe(int(0.9 * hi))
        above_fail = [n for n in range(hi + 1, hi + 1 + scan_above) if not probe(n)["ok"]]
        crashes = sorted(set(probe.crashes))
    if not at_min["ok"] or below["ok"] or above_fail:
        raise MicroError(f"arena search not monotonic around {hi} bytes"
                         + (f" (fails at {above_fail[:5]})" if above_fail else ""))
    return {"min_arena": hi, "steps": steps, "works_at_min": at_min["ok"],
            "checked_above": scan_above, "crashed_at": crashes,
            "one_byte_less": {"arena": hi - 1, "works": below["ok"],
                              "message": below["message"]},
            "at_90_percent": {"arena": int(0.9 * hi), "works": p90["ok"],
                              "message": p90["message"]}}


def _last_lines(text, n=2):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def parse_allocations(text: str) -> dict:
    """The RecordingMicroAllocator report -> {'total', 'head', 'tail', 'by_type': {...}}."""
    import re
    out = {"by_type": {}}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if m:
            out[key] = int(m.group(1))
    for m in re.finditer(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested "
                         r"(\d+) bytes for (\d+) ", text):
        out["by_type"][m.group(1)] = {"used": int(m.group(2)), "requested": int(m.group(3)),
                                      "count": int(m.group(4))}
    return out


# ============================================================================ data
def model_labels(path: str) -> List[str]:
    from pipeline import predictors
    from pipeline.checkpoints import CheckpointError
    try:
        return list(predictors.tflite_description(path)["labels"])
    except CheckpointError as e:
        raise MicroError(str(e)) from e


def test_features(cfg, labels, split="testing", max_clips=None, input_kind="features",
                  batch=256):
    """(x [n, ...] float32, y [n]) of a split, through the pipeline pipeline.evaluate uses."""
    from pipeline.input_pipeline import InputPipeline, index_from_config
    index = index_from_config(cfg, labels=labels)
    pipe = InputPipeline(index, cfg)
    if not pipe.num_examples(split):
        raise MicroError(f"no clips in the {split} split of {cfg.data_dir}")
    ds = pipe.eval_audio(split, batch) if input_kind == "audio" else pipe.eval(split, batch)
    xs, ys, n = [], [], 0
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        n += len(y)
        if max_clips and n >= max_clips:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    if max_clips:
        x, y = x[:max_clips], y[:max_clips]
    return x.astype(np.float32), y.astype(np.int64)


def quantize(x, dtype, scale, zero):
    """As pipeline.predictors.TFLiteRunner: round(x / scale + zero), clipped to the dtype."""
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


# ============================================================================ comparison
#: TFLite interpreters compared with TFLM: as pipeline.evaluate runs a model (optimized
#: kernels + default delegates: XNNPACK), without the default delegates, reference kernels
TFLITE_RESOLVERS = {"tflite": "AUTO", "tflite_nodelegate": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
                    "tflite_ref": "BUILTIN_REF"}


def tflite_interpreter(model_bytes: bytes, resolver="AUTO"):
    from pipeline.model_verify import verify_model
    verify_model(model_bytes, "model")                  # before an interpreter is built
    import tensorflow as tf
    it = tf.lite.Interpreter(
        model_content=model_bytes, num_threads=1,
        experimental_op_resolver_type=getattr(tf.lite.experimental.OpResolverType, resolver))
    it.allocate_tensors()
    return it


def _tflite_run(it, x):
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(out["index"]).copy()


def pair_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Outputs [n, classes] of two runtimes (raw dtype: int8 for the int8 model)."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1)
    return {"max_abs_output_diff": float(d.max()) if d.size else 0.0,
            "identical_fraction": float(np.mean(d.max(-1) == 0)),
            "top1_agreement": float(np.mean(a.reshape(len(a), -1).argmax(-1) ==
                                            b.reshape(len(b), -1).argmax(-1)))}


def compare(path: str, x: np.ndarray, y: np.ndarray, arena: Optional[int] = None,
            progress=None) -> dict:
    """Run every clip through TFLM (with ``arena`` bytes: default the minimal arena) and
    TFLite (TFLITE_RESOLVERS) on identical (quantized) input tensors."""
    with open(path, "rb") as f:
        model_bytes = f.read()
    from pipeline.model_verify import verify_model
    verify_model(model_bytes, path)  # before any interpreter (TFLite, TFLM probe) sees it
    with captured_fds((2,)):   # "INFO: Created TensorFlow Lite XNNPACK delegate"
        tfl = {k: tflite_interpreter(model_bytes, v) for k, v in TFLITE_RESOLVERS.items()}
    inp = tfl["tflite"].get_input_details()[0]
    out_d = tfl["tflite"].get_output_details()[0]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        xq = quantize(x, inp["dtype"], scale, zero)
    else:
        xq = x.astype(np.float32)
    xq = xq.reshape((len(xq),) + tuple(inp["shape"][1:]))
    t0 = time.time()
    search = min_arena(model_bytes, xq[:1]) if arena is None else None
    arena = arena or search["min_arena"]
    res = {"model": path, "arena_bytes": int(arena), "arena_search": search,
           "seconds_search": round(time.time() - t0, 2)}
    with captured_fds() as box:
        try:
            micro = tflm_interpreter(model_bytes, arena)
            err = None
        except RuntimeError as e:
            micro, err = None, str(e)
    if micro is None:
        raise MicroError(f"TFLM cannot run {path} with a {arena}-byte arena: {err}: "
                         f"{_last_lines(box['text'])}")
    outs = {"tflm": [], **{k: [] for k in tfl}}
    t0 = time.time()
    for i in range(len(xq)):
        xi = xq[i:i + 1]
        micro.set_input(xi, 0)
        micro.invoke()
        outs["tflm"].append(np.array(micro.get_output(0)).copy())
        for k, it in tfl.items():
            outs[k].append(_tflite_run(it, xi))
        if progress and (i + 1) % 100 == 0:
            progress(i + 1, len(xq))
    res["seconds_run"] = round(time.time() - t0, 2)
    outs = {k: np.concatenate(v) for k, v in outs.items()}
    with captured_fds() as box:
        micro.print_allocations()
    res["recorder"] = parse_allocations(box["text"])
    res["recorder_text"] = box["text"].strip().splitlines()
    res["clips"] = int(len(xq))
    res["output_dtype"] = np.dtype(out_d["dtype"]).name
    res["input_dtype"] = np.dtype(inp["dtype"]).name
    for k in tfl:
        res[f"tflm_vs_{k}"] = pair_stats(outs["tflm"], outs[k])
    res["accuracy"] = {k: float(np.mean(v.reshape(len(v), -1).argmax(-1) == y))
                       for k, v in outs.items()}
    res["_outputs"] = outs
    return res


def tflm_binary_attempt(path: str) -> str:
    """What TFLM says when asked to run a binary model (it cannot: custom ops)."""
    with open(path, "rb") as f:
        data = f.read()
    with ArenaProbe(data) as probe:
        r = probe(max(1 << 20, 8 * len(data)))
    if r["ok"]:
        return "runs"
    lines = [ln.strip() for ln in r["message"].split(" | ") if ln.strip()]
    first = [ln for ln in lines if "find op" in ln or "registration" in ln]
    return (first[0] if first else lines[0] if lines else "failed") + \
        ("; " + lines[-1] if lines and lines[-1] not in first[:1] else "")


def firmware_ok() -> bool:
    """The host firmware can be built here (make, g++)."""
    from firmware_sim import firmware_runner as fw
    return not fw.missing_tools("host")


def firmware_arena(path: str, scan_above: int = 32) -> dict:
    """The binary model in the project's firmware (firmware_sim/firmware, host build: TFLM
    from the pinned sources + lce_kernels/tflm; 64-bit pointers as on aarch64): the smallest
    arena with which AllocateTensors and one Invoke (zeros) work, by bisection to the byte as
    min_arena does (a crash counts as a failure), checked one byte below and for the next
    ``scan_above`` sizes; the heap its ops hold outside the arena (the kernel core's weight
    copies and scratch); the flash (file) bytes. {"runs": False, "error": ...} when the
    firmware refuses the model (e.g. SIGN in the bdfsmn flavor)."""
    from firmware_sim import firmware_runner as fw
    try:
        fw.build("host")
        rep = fw.info(path, build_first=False)
    except fw.FirmwareError as e:
        return {"runs": False, "error": str(e).replace(path + ": ", "")}
    x = np.zeros([1] + list(rep["input"]["shape"]), fw.tensor_file.DTYPES[rep["input"]["type"]])
    crashes = []

    def works(n):
        try:
            fw.run(path, x, arena=n, build_first=False, timeout=120)
            return True
        except fw.FirmwareError as e:
            if "without a report" in str(e):
                crashes.append(int(n))
            return False

    hi = 1 << 20
    while not works(hi):
        if hi >= ARENA_MAX:
            raise MicroError(f"{path}: the firmware fails even with a {hi}-byte arena")
        hi *= 2
    lo, steps = 0, 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        steps += 1
        if works(mid):
            hi = mid
        else:
            lo = mid
    below = works(hi - 1)
    above_fail = [n for n in range(hi + 1, hi + 1 + scan_above) if not works(n)]
    if below or above_fail:
        raise MicroError(f"{path}: firmware arena search not monotonic around {hi} bytes")
    _, at_min = fw.run(path, x, arena=hi, build_first=False)
    _, rec = fw.run(path, x, recording=True, build_first=False)
    return {"runs": True, "min_arena": hi, "steps": steps, "one_byte_less_fails": not below,
            "recording": firmware_recording(rec["recording"]),
            "checked_above": scan_above, "crashed_at": sorted(set(crashes)),
            "arena_used_at_min": at_min["arena_used_bytes"],
            "arena_used_at_1MiB": rep["arena_used_bytes"],
            "heap_ops_after_prepare": at_min["heap"]["ops_after_prepare"],
            "flash_bytes": os.path.getsize(path),
            "kernels": sorted({f"{n}: {k}" for n, k in rep["ops"]})}


# What TFLM's RecordingMicroAllocator files under the arena's tail (persistent allocations,
# from the arena's end); everything else it counts is the head (planned tensors + scratch).
TAIL_TYPES = ("eval_tensors", "persistent_tensors", "quantization", "persistent_buffers",
              "variable_buffers", "nodes_and_registrations", "op_data")


def firmware_recording(rec: dict) -> dict:
    """The firmware's ``recording`` JSON (firmware.cc --recording, 1 MiB arena) ->
    {'total', 'tail', 'head', 'by_type': {type: used bytes}}."""
    by_type = {k: int(v["used"]) for k, v in rec.items() if isinstance(v, dict)}
    tail = sum(by_type.get(k, 0) for k in TAIL_TYPES)
    total = int(rec["total"])
    return {"total": total, "tail": tail, "head": total - tail, "by_type": by_type}


# ============================================================================ report
def kb(n):
    return f"{n / 1024:,.1f} KiB"


def format_tflm(results: Dict[str, dict], split, data_dir) -> str:
    lines = [f"TFLite Micro (tflite-micro {tflm_version()}, Python interpreter, reference "
             f"kernels) vs TFLite on {split} clips of {data_dir}:", ""]
    hdr = (f"{'model':22s} {'min arena':>10s} {'recorder':>9s} {'head':>7s} {'tail':>7s} "
           f"{'live peak':>9s} {'clips':>5s} {'identical':>9s} {'max|d|':>6s} {'top1':>6s} "
           f"{'acc TFLM':>8s} {'acc TFLite':>10s}")
    lines.append(hdr)
    for name, r in results.items():
        rec = r["recorder"]
        s = r["tflm_vs_tflite"]
        lines.append(
            f"{name:22s} {r['arena_bytes']:>10,d} {rec.get('total', 0):>9,d} "
            f"{rec.get('head', 0):>7,d} {rec.get('tail', 0):>7,d} "
            f"{r['budget']['activations']['peak']:>9,d} {r['clips']:>5d} "
            f"{s['identical_fraction']:>9.4f} {s['max_abs_output_diff']:>6.0f} "
            f"{s['top1_agreement']:>6.4f} {r['accuracy']['tflm']:>8.4f} "
            f"{r['accuracy']['tflite']:>10.4f}")
    for name, r in results.items():
        rec, se = r["recorder"], r["arena_search"]
        lines += ["", f"{name}:"]
        if se:
            lines.append(
                f"  arena: minimal {r['arena_bytes']:,d} B (bisection, {se['steps']} steps; "
                f"every clip ran with it); {se['one_byte_less']['arena']:,d} B fails "
                f"({se['one_byte_less']['message']}); 90 % = {se['at_90_percent']['arena']:,d}"
                f" B {'works' if se['at_90_percent']['works'] else 'fails'}")
            if se["crashed_at"]:
                lines.append(f"  TFLM CRASHED (segfault, not an error) at {len(se['crashed_at'])}"
                             f" arena size(s) tried: {se['crashed_at'][:6]} (trials run in a "
                             "child process)")
        else:
            lines.append(f"  arena: {r['arena_bytes']:,d} B (given)")
        extra = r["arena_bytes"] - rec.get("total", 0)
        lines.append(f"  recorder: total {rec.get('total', 0):,d} = head {rec.get('head', 0):,d} "
                     f"(planned tensors + scratch) + tail {rec.get('tail', 0):,d} (persistent)"
                     + (f"; the minimal arena is {extra:,d} B more (temporary space of the "
                        "memory planner while it plans)" if extra > 0 else
                        "; = the minimal arena"))
        for k, v in rec.get("by_type", {}).items():
            lines.append(f"    {k:42s} {v['used']:>8,d} B ({v['count']} allocations)")
        b = r["budget"]["activations"]
        lines.append(f"  lifetime analysis: peak of live tensors {b['peak']:,d} B at op "
                     f"{b['peak_op']} ({b['peak_op_name']}) vs TFLM head {rec.get('head', 0):,d} B")
        for k in TFLITE_RESOLVERS:
            s = r[f"tflm_vs_{k}"]
            lines.append(f"  TFLM vs {k:18s} identical {s['identical_fraction']:.4f}, max |d| "
                         f"{s['max_abs_output_diff']:.0f} ({r['output_dtype']} steps), top-1 "
                         f"agreement {s['top1_agreement']:.4f}")
        acc = r["accuracy"]
        lines.append(f"  accuracy on {r['clips']} clips: TFLM {acc['tflm']:.4f}, TFLite "
                     f"{acc['tflite']:.4f} (no delegate {acc['tflite_nodelegate']:.4f}, "
                     f"reference kernels {acc['tflite_ref']:.4f})"
                     + (f" (sidecar test accuracy {r['sidecar_test_accuracy']:.4f})"
                        if r.get("sidecar_test_accuracy") is not None else ""))
    return "\n".join(lines)


def format_budget(budgets: Dict[str, dict], attempts: Dict[str, str],
                  firmware: Optional[Dict[str, dict]] = None) -> str:
    lines = ["Memory budget from the flatbuffer (bytes; constants each buffer once; live = "
             "sum of live non-constant tensors, op order):", ""]
    lines.append(f"{'model':26s} {'weights':>9s} {'bit-packed':>10s} {'vectors':>8s} "
                 f"{'front':>8s} {'backbone':>8s} {'classif':>8s} {'act peak':>9s} "
                 f"{'(op)':>14s} {'+scratch':>9s}")
    for name, b in budgets.items():
        w, a = b["weights"], b["activations"]
        bd = b.get("bdfsmn")
        plus = f"{bd['peak_with_scratch']['peak']:>9,d}" if bd else f"{'-':>9s}"
        lines.append(f"{name:26s} {w['total']:>9,d} {w['binary_bits']:>10,d} "
                     f"{w['binary_vectors']:>8,d} {w['front_end']:>8,d} {w['backbone']:>8,d} "
                     f"{w['classifier']:>8,d} {a['peak']:>9,d} "
                     f"{'#%d %s' % (a['peak_op'], a['peak_op_name'][:9]):>14s} {plus}")
    for name, b in budgets.items():
        w, a = b["weights"], b["activations"]
        lines += ["", f"{name} ({b['file_bytes']:,d} B file, {b['ops']} ops):"]
        lines.append(f"  weights {w['total']:,d} B by type " +
                     ", ".join(f"{k} {v:,d}" for k, v in sorted(w["by_type"].items())))
        lines.append(f"  activation peak {a['peak']:,d} B at op {a['peak_op']} "
                     f"({a['peak_op_name']}): " + ", ".join(
                         f"{n[:40]} {s} {dt} {nb:,d}" for n, s, dt, nb in a["peak_tensors"]))
        lines.append("  peak by part: " + ", ".join(
            f"{k} {v['peak']:,d} (op {v['op']} {v['op_name']})"
            for k, v in b["by_section"].items()))
        groups = {}
        for bf in w["binary_kernels_as_float"]:
            g = groups.setdefault((bf["section"], bf["op"], tuple(bf["shape"])), [0, 0, 0])
            g[0], g[1], g[2] = g[0] + 1, g[1] + bf["bytes"], g[2] + bf["packed_bytes"]
        for (section, op, shape), (count, nb, packed) in groups.items():
            lines.append(f"  binary kernels held as float: {section} {op} {list(shape)} x{count}"
                         f" = {nb:,d} B (bit-packed + one float per channel: {packed:,d} B)")
        bd = b.get("bdfsmn")
        if bd:
            L0 = bd["layers"][0]
            s, c = L0["scratch"], L0["init_copy"]
            lines.append(
                f"  {ops.BDFSMN} x{bd['count']} (T={L0['T']} C={L0['C']} H={L0['H']} "
                f"K={L0['left'] + L0['right'] + 1}): scratch per layer {s['total']:,d} B (bit "
                f"planes {s['bit_planes']:,d}, frame scales {s['frame_scales']}, m {s['m']:,d}, "
                f"h {s['h']:,d}); Init copy per layer {c['total']:,d} B (weights "
                f"{c['weights']:,d}, vectors {c['vectors']:,d})")
            p = bd["peak_with_scratch"]
            lines.append(
                f"  TFLite op as built: {bd['scratch_sum']:,d} B workspaces (one per op "
                f"instance) + {bd['init_copy_sum']:,d} B Init copies = {bd['tflite_op_heap']:,d}"
                f" B heap outside the arena; TFLM port (scratch per op, no copy): peak "
                f"{p['peak']:,d} B at op {p['op']} ({p['op_name']})")
        if name in attempts:
            lines.append(f"  TFLM: {attempts[name]}")
        fwr = (firmware or {}).get(name)
        if fwr is not None and fwr["runs"]:
            lines.append(
                f"  TFLM firmware (firmware_sim/firmware, host build): minimal arena "
                f"{fwr['min_arena']:,d} B (bisection, {fwr['steps']} steps; one byte less "
                f"fails), heap of the ops {fwr['heap_ops_after_prepare']:,d} B (kernel core "
                f"copies + scratch), flash {fwr['flash_bytes']:,d} B")
            r = fwr["recording"]
            lines.append(
                f"    recorder (1 MiB arena): total {r['total']:,d} B = head {r['head']:,d} "
                f"(planned tensors + scratch) + tail {r['tail']:,d} (persistent: " +
                ", ".join(f"{k} {v:,d}" for k, v in r["by_type"].items() if v) + ")")
        elif fwr is not None:
            lines.append(f"  TFLM firmware: {fwr['error']}")
    lines += ["", "Notes: the live sum counts every live tensor separately, so it is an upper "
              "bound of what a linear planner needs when buffers may be shared or overlapped "
              "(TFLite's arena planner runs RESHAPE and some element-wise ops in place), and a "
              "lower bound for a planner that fragments; for the int8 teacher compare it with "
              "the TFLM arena's head (the greedy planner's result) above. TFLM cannot run the "
              f"binary models: {ops.BDFSMN} / LCE ops are custom ops that need TFLM's headers and "
              "a native build (../shared/docs/ENVIRONMENT.md); the 'TFLM:' lines are TFLM's "
              "own error messages."]
    return "\n".join(lines)


def short(path):
    return os.path.splitext(os.path.basename(path))[0]


def split_models(paths: Sequence[str]):
    """(TFLM models, binary models): a model whose ops are all TFLite builtins runs in TFLM
    (the int8 teacher); one with custom ops (``ops.BDFSMN``, LCE's) gets the memory budget."""
    from models.lce_census import custom_ops
    tflm, binary = [], []
    for p in paths:
        if not os.path.exists(p):
            raise MicroError(f"{p} does not exist; expected a .tflite file")
        with open(p, "rb") as f:
            (binary if custom_ops(f.read()) else tflm).append(p)
    return tflm, binary


def expand(values) -> List[str]:
    out = []
    for v in values or []:
        out += [p.strip() for p in str(v).split(",") if p.strip()]
    return out


# ============================================================================ tool
def run(int8_models: Sequence[str], binary_models: Sequence[str], data_cfg=None,
        split="testing", max_clips=None, wanted_words=None, arena=None) -> dict:
    """The tool without its flags; returns the JSON summary (plus '_text')."""
    for p in list(int8_models) + list(binary_models):
        if not os.path.exists(p):
            raise MicroError(f"{p} does not exist")
    tflm, features = {}, {}
    for path in int8_models:
        labels = model_labels(path)
        if wanted_words:
            words = [w for w in labels if not w.startswith("_")]
            if sorted(words) != sorted(wanted_words):
                raise MicroError(f"--wanted_words {','.join(wanted_words)} differ from the "
                                 f"classes of {path}: {labels}")
        if data_cfg is None:
            raise MicroError("the TFLM comparison needs --data_dir (a Speech Commands folder)")
        from pipeline import predictors
        meta = predictors.tflite_description(path)  # the file's own description
        kind = meta["input"]
        key = (tuple(labels), kind)
        if key not in features:
            logging.info("features of the %s split (%s)", split, data_cfg.data_dir)
            features[key] = test_features(data_cfg, labels, split, max_clips, kind)
        x, y = features[key]
        logging.info("TFLM vs TFLite: %s, %d clips", path, len(x))
        r = compare(path, x, y, arena,
                    progress=lambda i, n: logging.info("  %d / %d clips", i, n))
        r.pop("_outputs")
        r["budget"] = budget(path)
        ta = (predictors.read_sidecar(path) or {}).get("test_accuracy") or {}  # the report
        r["sidecar_test_accuracy"] = ta.get("accuracy") if (
            split == "testing" and ta.get("n") == len(x)) else None
        tflm[short(path)] = r
    budgets = {short(p): budget(p) for p in binary_models}
    attempts = {short(p): tflm_binary_attempt(p) for p in binary_models}
    firmware = {short(p): firmware_arena(p) for p in binary_models} if firmware_ok() else {}
    text = []
    if tflm:
        text.append(format_tflm(tflm, split, data_cfg.data_dir if data_cfg else None))
    all_budgets = dict(budgets)
    for k, r in tflm.items():
        all_budgets.setdefault(k, r["budget"])
    if all_budgets:
        text.append(format_budget(all_budgets, attempts, firmware))
    out = {"tflm_version": tflm_version(), "split": split,
           "tflm": {k: {"arena_bytes": r["arena_bytes"],
                        "arena_one_byte_less_fails": (not r["arena_search"]["one_byte_less"]
                                                      ["works"]) if r["arena_search"] else None,
                        "arena_search_crashed_at": (r["arena_search"]["crashed_at"]
                                                    if r["arena_search"] else None),
                        "recorder": r["recorder"], "clips": r["clips"],
                        **{f"tflm_vs_{t}": r[f"tflm_vs_{t}"] for t in TFLITE_RESOLVERS},
                        "accuracy": r["accuracy"],
                        "lifetime_peak": r["budget"]["activations"]["peak"],
                        "weights": r["budget"]["weights"]["total"]}
                    for k, r in tflm.items()},
           "binary": {k: {"weights": {kk: vv for kk, vv in b["weights"].items()
                                      if kk != "binary_kernels_as_float"},
                          "binary_kernels_as_float": {
                              "bytes": sum(x["bytes"] for x in
                                           b["weights"]["binary_kernels_as_float"]),
                              "packed_bytes": sum(x["packed_bytes"] for x in
                                                  b["weights"]["binary_kernels_as_float"])},
                          "activation_peak": b["activations"]["peak"],
                          "activation_peak_op": f"{b['activations']['peak_op']} "
                                                f"{b['activations']['peak_op_name']}",
                          "by_section": {s: v["peak"] for s, v in b["by_section"].items()},
                          **({"bdfsmn_scratch_per_layer": b["bdfsmn"]["scratch_per_layer"],
                              "bdfsmn_layers": b["bdfsmn"]["count"],
                              "bdfsmn_scratch_sum": b["bdfsmn"]["scratch_sum"],
                              "bdfsmn_init_copy_sum": b["bdfsmn"]["init_copy_sum"],
                              "tflite_op_heap": b["bdfsmn"]["tflite_op_heap"],
                              "peak_with_scratch": b["bdfsmn"]["peak_with_scratch"]["peak"]}
                             if "bdfsmn" in b else {}),
                          "tflm": attempts[k],
                          **({"firmware": firmware[k]} if k in firmware else {})}
                      for k, b in budgets.items()},
           "notes": "live peak: sum of live tensors in op order (upper bound with buffer "
                    "sharing, lower bound under fragmentation); TFLM cannot run the binary "
                    "models (custom ops need TFLM headers + a native build)"}
    out["_text"] = "\n\n".join(text)
    out["_details"] = {"tflm": tflm, "budgets": budgets}
    return out


def define_flags():
    from pipeline import data_flags
    data_flags.define_flags(data_dir_default=DEFAULT_DATA)
    flags.DEFINE_multi_string("models", [DEFAULT_INT8, DEFAULT_BINARY], "The .tflite files "
                              "(comma list or repeated): builtin-op models (int8 teacher) run in "
                              "TFLM, models with custom ops (bdfsmn, lce) get the memory budget.")
    flags.DEFINE_enum("split", "testing", ["testing", "validation", "training"],
                      "Split the clips come from.")
    flags.DEFINE_integer("max_clips", None, "At most this many clips (default: the whole split).")
    flags.DEFINE_integer("arena_size", None, "Run with this arena instead of searching the "
                         "minimal one.")
    from pipeline import cli_vocabulary
    cli_vocabulary.define_aliases("firmware_sim.micro")  # --int8_model, --binary_model


def main(argv):
    del argv
    from pipeline import data_flags
    int8_models, binary_models = split_models(expand(FLAGS.models))
    cfg = data_flags.config_from_flags() if int8_models else None
    out = run(int8_models, binary_models, cfg, FLAGS.split, FLAGS.max_clips,
              FLAGS.wanted_words, FLAGS.arena_size)
    print(out.pop("_text"))
    details = out.pop("_details")
    print()
    print(json.dumps(out))
    return dict(out, details=details)  # --json_out (full detail)


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(MicroError,))
