"""Python side of the firmware runner (firmware_sim/firmware/firmware.cc): build it, run a
.tflite on a batch of inputs on the host build or the aarch64 build under qemu-aarch64, read the
outputs and the runner's JSON report; a ``pipeline.predictors.Predictor`` over it.

    from firmware_sim import firmware_runner as fw
    y, info = fw.run("m.tflite", x, target="aarch64")          # x: [items, ...] model dtype
    pred = fw.predictor("m.tflite", target="host")              # pred.predict(features)
    logits, states, info = fw.run_stream("s.tflite", hops)      # a streaming model, hop by hop

Targets: ``host`` (build/x86_64/firmware, native) and ``aarch64`` (build/aarch64/firmware under
``qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu``). Float kernels: ``reference`` (TFLM's,
the portable default, the same bits on both targets) or ``xnnpack`` (aarch64 build only).
Any failure of the firmware (its JSON error and TFLM's messages) raises FirmwareError.

Streaming models (``pipeline.export --streaming``: input 0 the hop, input k + 1 state k, output
0 the logits, output k + 1 the new state k): the items of ``inputs`` are the hops of one stream
(states from zero, each new state fed back by the firmware after every Invoke; ``stream_reset``
N: back to zero every N hops); ``run_stream`` also returns the final states.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Optional, Tuple

import numpy as np

from firmware_sim import tensor_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FW = os.path.join(ROOT, "firmware_sim")
BUILD = os.path.join(FW, "build")
BINARIES = {"host": os.path.join(BUILD, "x86_64", "firmware"),
            "aarch64": os.path.join(BUILD, "aarch64", "firmware"),
            "asan": os.path.join(BUILD, "asan", "firmware")}
MAKE_TARGETS = {"host": "firmware-host", "aarch64": "firmware-aarch64", "asan": "firmware-asan"}
TARGETS = ("host", "aarch64")
FLOAT_KERNELS = ("reference", "xnnpack")
KERNEL_PATHS = ("auto", "portable", "neon", "avx512")
QEMU = os.environ.get("QEMU_AARCH64", "qemu-aarch64")
QEMU_CPU = "cortex-a53"
CROSS_SYSROOT = "/usr/aarch64-linux-gnu"
PLUGIN = os.path.join(BUILD, "insn_count.so")


class FirmwareError(RuntimeError):
    """The firmware refused the model or the inputs (its message), or could not be built."""


def missing_tools(target: str) -> list:
    """Why ``target`` cannot be built or run here (empty: fine)."""
    need = ["make", "g++"] + (["aarch64-linux-gnu-g++", QEMU] if target == "aarch64" else [])
    return [f"{t} not found (make setup installs it)" for t in need if shutil.which(t) is None]


def build(target: str = "host") -> str:
    """``make -C firmware_sim <target>`` (a no-op when up to date); returns the binary."""
    if target not in BINARIES:
        raise FirmwareError(f"unknown target {target!r}; expected one of {sorted(BINARIES)}")
    why = missing_tools(target)
    if why:
        raise FirmwareError("cannot build the firmware: " + "; ".join(why))
    r = subprocess.run(["make", "-s", "-j2", "-C", FW, MAKE_TARGETS[target]],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise FirmwareError(f"building the {target} firmware failed:\n" +
                            (r.stdout + r.stderr)[-4000:])
    return BINARIES[target]


def command(target: str, args, plugin_json: Optional[str] = None, mnemonics=False,
            cpuinfo: Optional[str] = None):
    """The argv that runs the firmware of ``target`` with ``args``. ``plugin_json``: count
    instructions (aarch64; firmware_sim/qemu_plugin) into that file. ``cpuinfo``: a file bound
    over /proc/cpuinfo in a private mount namespace (XNNPACK's microarchitecture choice; see
    firmware_sim.cost)."""
    binary = BINARIES[target]
    plugin_json = os.path.abspath(plugin_json) if plugin_json else None
    cpuinfo = os.path.abspath(cpuinfo) if cpuinfo else None
    if target != "aarch64":
        if plugin_json:
            raise FirmwareError("instruction counts need the aarch64 target")
        return [binary] + list(args)
    cmd = [QEMU, "-cpu", QEMU_CPU, "-L", CROSS_SYSROOT]
    if plugin_json:
        cmd += ["-plugin", f"{PLUGIN},out={plugin_json}" + (",mnemonics=on" if mnemonics else "")]
    cmd += [binary] + list(args)
    if cpuinfo:
        script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", script, cpuinfo] + cmd
    return cmd


def parse_report(stdout: str, stderr: str, returncode: int, what: str) -> dict:
    """The firmware's one JSON line; FirmwareError when it failed or printed none."""
    report = None
    for line in stdout.strip().splitlines()[::-1]:
        try:
            report = json.loads(line)
            break
        except ValueError:
            continue
    if report is None or not isinstance(report, dict):
        tail = (stderr or "").strip().splitlines()[-5:]
        raise FirmwareError(f"{what}: the firmware exited with status {returncode} without a "
                            f"report (crashed?); stderr: {' | '.join(tail)}")
    if not report.get("ok"):
        log = " ".join((report.get("tflm_log") or "").split())
        raise FirmwareError(f"{what}: {report.get('error')}" + (f" (TFLM: {log[-600:]})"
                                                               if log else ""))
    if returncode != 0:
        raise FirmwareError(f"{what}: exit status {returncode}")
    return report


def run(model: str, inputs: Optional[np.ndarray] = None, target: str = "host",
        float_kernels: str = "reference", kernel_path: str = "auto",
        arena: Optional[int] = None, count: int = 0, per_op: bool = False,
        recording: bool = False, plugin_json: Optional[str] = None, mnemonics=False,
        cpuinfo: Optional[str] = None, timeout: float = 3600,
        build_first: bool = True, op_offset: int = 0, stream_reset: int = 0,
        final_states: bool = False) -> Tuple[Optional[np.ndarray], dict]:
    """Run ``model`` on ``inputs`` ([items, ...] in the model's input dtype; None: no items).
    Returns (outputs [items, ...] in the model's output dtype or None, the JSON report).
    Streaming models (module doc): ``stream_reset``, ``final_states`` (the report's
    ``final_states``: one array per state, the states after the last item); ``op_offset``: the
    per-op regions start at op ``op_offset`` (firmware.cc)."""
    if target not in BINARIES:
        raise FirmwareError(f"unknown target {target!r}; expected one of {sorted(BINARIES)}")
    if float_kernels not in FLOAT_KERNELS:
        raise FirmwareError(f"float kernels {float_kernels!r}: expected one of {FLOAT_KERNELS}")
    if build_first:
        build(target)
    elif not os.path.exists(BINARIES[target]):
        raise FirmwareError(f"{BINARIES[target]} is not built (make -C firmware_sim "
                            f"{MAKE_TARGETS[target]})")
    work = tempfile.mkdtemp(prefix="fw_run_")
    try:
        args = ["--model", os.path.abspath(model), "--float_kernels", float_kernels,
                "--kernel_path", kernel_path]
        if arena is not None:
            args += ["--arena", str(int(arena))]
        if count:
            args += ["--count", str(int(count))]
        if per_op:
            args += ["--per_op"]
        if recording:
            args += ["--recording"]
        if op_offset:
            args += ["--op_offset", str(int(op_offset))]
        if stream_reset:
            args += ["--stream_reset", str(int(stream_reset))]
        out_path = states_path = None
        if inputs is not None:
            in_path, out_path = os.path.join(work, "in.bin"), os.path.join(work, "out.bin")
            tensor_file.write(in_path, inputs)
            args += ["--inputs", in_path, "--outputs", out_path]
            if final_states:
                states_path = os.path.join(work, "states.bin")
                args += ["--final_states", states_path]
        cmd = command(target, args, plugin_json=plugin_json, mnemonics=mnemonics,
                      cpuinfo=cpuinfo)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)
        except subprocess.TimeoutExpired as e:
            raise FirmwareError(f"{model}: the firmware did not finish in {timeout} s") from e
        report = parse_report(r.stdout, r.stderr, r.returncode, model)
        y = tensor_file.read(out_path) if out_path else None
        if states_path:
            flat = tensor_file.read(states_path)
            sizes = [int(np.prod(s["shape"])) for s in report["states"]]
            parts = np.split(flat, np.cumsum(sizes)[:-1])
            report["final_states"] = [p.reshape(s["shape"])
                                      for p, s in zip(parts, report["states"])]
        return y, report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_stream(model: str, hops, target: str = "host", stream_reset: int = 0, **kw):
    """A streaming model hop by hop in the firmware: ``hops`` [n, ...] (one hop each, the
    model's input 0 without its batch axis or with it), states from zero (``stream_reset`` N:
    zeroed every N hops). Returns (logits [n, classes], final states (one array per state, the
    model's shapes), the report)."""
    rep0 = info(model, target=target, build_first=kw.pop("build_first", True),
                **{k: v for k, v in kw.items() if k in ("float_kernels", "kernel_path", "arena")})
    if not rep0.get("streaming"):
        raise FirmwareError(f"{model}: not a streaming model (one input, one output)")
    tin = rep0["input"]
    x = np.asarray(hops, tensor_file.DTYPES[tin["type"]])
    x = x.reshape((len(x),) + tuple(tin["shape"]))
    y, rep = run(model, x, target=target, build_first=False, stream_reset=stream_reset,
                 final_states=True, **kw)
    return y.reshape(len(x), -1), rep.pop("final_states"), rep


def info(model: str, target: str = "host", **kw) -> dict:
    """The firmware's report without running anything: input / output types, shapes and
    quantization, ops and kernels, arena use after AllocateTensors."""
    return run(model, None, target=target, **kw)[1]


def quantize(x, dtype, scale, zero):
    """As pipeline.predictors.TFLiteRunner: round(x / scale + zero), clipped to the dtype."""
    i = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), i.min, i.max).astype(dtype)


def predictor(model: str, target: str = "host", float_kernels: str = "reference",
              kernel_path: str = "auto", arena: Optional[int] = None):
    """A ``pipeline.predictors.Predictor`` running ``model`` in the firmware: features (or PCM)
    float32 in, float logits out (int8 models: quantized / dequantized with the model's
    scale and zero point, as pipeline.predictors.TFLiteRunner does). The model is verified
    and described as ``pipeline.predictors.load_predictor`` does. ``.reports`` keeps the
    firmware's report of every batch."""
    from pipeline import model_contract, predictors
    from pipeline.model_verify import verify_file
    model_bytes = verify_file(model)
    meta, sidecar = predictors._describe(model, model_bytes)
    model_contract.check_digest(model, model_bytes, sidecar)
    model_contract.check_features(model, meta)
    rep = info(model, target=target, float_kernels=float_kernels, kernel_path=kernel_path,
               arena=arena)
    tin, tout = rep["input"], rep["output"]
    in_dtype = tensor_file.DTYPES[tin["type"]]
    out_dtype = tensor_file.DTYPES[tout["type"]]
    if int(np.prod(tout["shape"])) != len(meta["labels"]):
        raise FirmwareError(f"{model}: output {tout['shape']} for {len(meta['labels'])} classes")
    reports = []
    stream = meta.get("streaming") if rep.get("streaming") else None
    if rep.get("streaming") and (not stream or meta["input"] != "features"):
        raise FirmwareError(f"{model}: a streaming model without a features-input streaming "
                            "description (pipeline.export --streaming)")

    def fn_stream(batch):
        # each clip hop by hop from zero state; its logits: those of the last hop
        x = np.asarray(batch, np.float32)
        n = int(stream["window_hops"])
        hops = x.reshape((len(x) * n,) + tuple(tin["shape"]))
        y, r = run(model, hops, target=target, float_kernels=float_kernels,
                   kernel_path=kernel_path, arena=arena, build_first=False, stream_reset=n)
        reports.append(r)
        return y.reshape(len(x), n, -1)[:, -1]

    def fn(batch):
        if stream:
            return fn_stream(batch)
        x = np.asarray(batch, np.float32)
        if in_dtype != np.float32:
            x = quantize(x, in_dtype, tin["scale"], tin["zero_point"])
        y, r = run(model, x.reshape((len(x),) + tuple(tin["shape"])), target=target,
                   float_kernels=float_kernels, kernel_path=kernel_path, arena=arena,
                   build_first=False)
        reports.append(r)
        y = y.reshape(len(x), -1)
        if out_dtype != np.float32:
            y = (y.astype(np.float32) - tout["zero_point"]) * np.float32(tout["scale"])
        return y

    pred = predictors.Predictor(os.path.basename(model), meta["labels"], meta["input"], fn,
                                f"tflm-{target}", meta)
    pred.reports = reports
    pred.firmware_info = rep
    return pred
