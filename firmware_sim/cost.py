"""Instructions per inference of BiFSMNv2 on emulated ARMv8 (qemu-aarch64 + insn_count plugin).

Reads: the .tflite files of --models (default: the float / int8 teacher d8 and the binary
  artifact d8/d4/d2/d1 in pretrained/real8/exports), counted whole in the aarch64 firmware; the
  kernel tables use random weights of the shapes --T/--C/--H/--layers (builds the drivers).
Writes: the parameter files and raw counts into --out_dir (optional; default a temporary
  folder); the full result (--json_out); prints tables and one JSON line.

    python -m firmware_sim.cost                      # depth-8 model shapes (T=8, C=128, H=256)
    python -m firmware_sim.cost --T 4 --C 32 --H 64 --layers 2 --runs 1   # tiny, for tests
    python -m firmware_sim.cost --models build/stream_exports/dfsmn_stream_float_d8_streaming.tflite

What is counted (every number is a count of executed AArch64 instructions inside a marked
region, firmware_sim/qemu_plugin/insn_count.c; set-up, weight loading and a warm-up run are
outside the regions; each region is entered `--runs` times and the counts divided):

- BITWISE (firmware_sim/drivers/bdfsmn_bench.cc, static, -O2, NEON path of lce_kernels/core):
  each DFSMN layer (Layer::Eval), the backbone (all layers chained), per-stage counts
  (binarize / memory block / popcount GEMM + post-processing), the student's binary `linear`
  (kernel Binarize + Pointwise), and a PROXY of the student's binary conv2 (kernel Binarize
  + an im2col bit gather + the kernel's popcount GEMM; not bit-exact with the model's op).
- FLOAT (firmware_sim/drivers/float_bench.cc): the full-precision teacher on XNNPACK's f32
  operators (Debian libxnnpack-dev:arm64): per layer dwconv + prelu + add + FC(relu) + FC +
  prelu + add, and conv1, conv2, linear, classifier, whole model.
- WHOLE MODELS (firmware_sim/model_cost.py): each model file of --models runs in the aarch64
  firmware (TensorFlow Lite Micro + the project's ops, float ops on XNNPACK), one
  MicroInterpreter::Invoke() counted, and per op: `model_instruction_ratio` = float teacher /
  binary artifact, both one whole inference of a model file; `binary_runtime` says what ran.
- STREAMING MODELS (a .tflite of `pipeline.export --streaming` in --models, recognised by its
  description): MEASURED hop by hop in the same firmware, `--hops` hops (default 16) from zero
  state, the states fed back by the firmware outside the counted regions: mean instructions per
  hop (each hop's Invoke() too), per second of audio (x 1000 / hop_ms), per op, arena
  (`streaming_hop_insns`, `streaming_insns_per_second`, `streaming_models` in the JSON;
  `firmware_sim.stream --cost_json` prefers these to its estimate). With a windowed binary
  artifact in --models too, `streaming_vs_windowed`: the windowed loop's instructions per
  second of audio (the deepest windowed binary, one inference every 250 ms) over each
  streaming binary export's.
- The former estimate, kept as `*_sum_of_regions`: whole binary model at depth d = float
  conv1 + binary conv2 proxy + binary linear + the bitwise layers of the depth's layer set +
  float classifier, a SUM of separately measured driver regions. The float teacher at depth 8
  is measured end to end in the driver (region 44) and also shown as the sum of its parts.

By default XNNPACK runs as on a Cortex-A53 (`--uarch a53`): qemu-user shows the guest the
host's /proc/cpuinfo, so cpuinfo cannot see a microarchitecture and XNNPACK falls back to its
generic kernels; with a53 the tool runs qemu in a private mount namespace (unshare -m, root)
with a Raspberry Pi 3B+ /proc/cpuinfo bound over the real one, and XNNPACK picks its
Cortex-A53-tuned kernels (more instructions: 64-bit loads + INS that dual-issue with FMLA
on an A53). `--uarch generic` skips that. qemu always runs with `-cpu cortex-a53` (HWCAPs).

Output: a table, a latency estimate (assumed IPC range), an account of what limits the ratio,
and ONE JSON line last (also written to --json_out).
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import types

import numpy as np
from absl import app, flags

from firmware_sim import model_cost
from pipeline import cli, cli_vocabulary, output_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FW = os.path.join(ROOT, "firmware_sim")
BUILD = os.path.join(FW, "build")
PLUGIN = os.path.join(BUILD, "insn_count.so")
BENCH = os.path.join(BUILD, "aarch64", "bdfsmn_bench")
FLOAT = os.path.join(BUILD, "aarch64", "float_bench")
CROSS_SYSROOT = "/usr/aarch64-linux-gnu"
QEMU = os.environ.get("QEMU_AARCH64", "qemu-aarch64")
CPU = "cortex-a53"
CLOCK_HZ = 1.2e9
IPC_RANGE = (0.5, 1.0)  # see latency_note()


def depth_sets(n_layers):
    """Thinnable layer sets: depth n/2^op keeps layers j with (j + 1) % 2^op == 0, i.e. for
    8 layers [0..7], [1,3,5,7], [3,7], [7] (REFERENCE.md, models/thinnable.py)."""
    sets, step = {}, 1
    while step <= n_layers:
        sets[n_layers // step] = [j for j in range(n_layers) if (j + 1) % step == 0]
        step *= 2
    return sets
# the passes of Layer::Eval (Layer::EvalStage; each binarization is fused into the pass that
# produces its input): region id, name
STAGES = [(10, "binarize_x"), (11, "memory_block+pw1_binarize"),
          (12, "pw1_gemm_post+pw2_binarize"), (13, "pw2_gemm_post_residual")]
GEMM_MNEMONICS = ("eor", "cnt", "addp", "uaddlp", "uadalp")  # XOR / popcount / reduction
FLOAT_OPS = [(50, "dwconv"), (51, "prelu x2"), (52, "add x2"), (53, "fc1+relu"), (54, "fc2")]
CLASS_GROUPS = {"simd": ["simd"], "ld/st": ["load", "store", "simd_load", "simd_store"],
                "int+branch": ["int", "branch"], "fp scalar": ["fp"], "other": ["other"]}

# A Raspberry Pi 3B+ /proc/cpuinfo (4x Cortex-A53 r0p4; 2 shown): what cpuinfo parses.
A53_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd03\n"
    "CPU revision\t: 4\n\n" for i in range(2)) + "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 3 Model B Plus Rev 1.3\n"


# ------------------------------------------------------------------ tools
def missing_tools(need_float=True):
    """Human-readable reasons the tool cannot run (empty list: fine)."""
    why = []
    for exe in (QEMU, "aarch64-linux-gnu-g++", "gcc", "make"):
        if shutil.which(exe) is None:
            why.append(f"{exe} not found (make setup installs gcc-aarch64-linux-gnu, qemu-user)")
    if need_float and not os.path.exists("/usr/include/xnnpack.h"):
        why.append("XNNPACK arm64 not installed (make -C firmware_sim deps)")
    return why


def build(need_float=True):
    targets = ["plugin", "bench"] + (["float"] if need_float else [])
    r = subprocess.run(["make", "-s", "-j1", "-C", FW] + targets, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("build failed:\n" + r.stdout + r.stderr)


def a53_namespace_works():
    """True if `unshare -m` + a bind mount over /proc/cpuinfo works here (needs root)."""
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        "mount --bind /dev/null /proc/cpuinfo && test ! -s /proc/cpuinfo"],
                       capture_output=True)
    return r.returncode == 0


def run_counted(argv, json_path, workdir, dynamic=False, cpuinfo=None, mnemonics=True):
    """Run an aarch64 program under qemu with the plugin; returns (stdout, counts dict)."""
    plug = f"{PLUGIN},out={json_path}" + (",mnemonics=on" if mnemonics else "")
    cmd = [QEMU, "-cpu", CPU] + (["-L", CROSS_SYSROOT] if dynamic else []) + \
        ["-plugin", plug] + argv
    if cpuinfo is not None:
        fake = os.path.join(workdir, "cpuinfo")
        with open(fake, "w") as f:
            f.write(cpuinfo)
        script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", script, fake] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    with open(json_path) as f:
        counts = json.load(f)
    if counts.get("errors_total"):
        raise RuntimeError(f"marker errors: {counts['errors']}")
    return r.stdout, counts


# ------------------------------------------------------------------ parameter files
def _kernel_ref():
    from pipeline import kernel_ref  # NumPy reference of the layer and the .bdv vector format
    return kernel_ref


def write_layer_files(out_dir, n_layers, T, C, H, left, right, seed=0, depth_index=0,
                      with_ref=True):
    """Random BiFSMNv2 layers in the lce_kernels vector format (kernel_ref.case_records).
    Layer 0 carries a tie-free input x and its reference output (for --check)."""
    kr = _kernel_ref()
    rng = np.random.default_rng(seed)
    paths = []
    for j in range(n_layers):
        raw = kr.random_raw_layer(rng, C, H, left, right)
        p = kr.to_float32(kr.fold(raw, depth_index))
        shape = (T, C, H, left, right, 1, depth_index)
        if j == 0 and with_ref:
            x, ref = kr.tie_free_input(rng, p, T, C, left, right, 1)
            rec = kr.case_records(p, x, ref, shape)
        else:
            rec = {"shape": np.array(shape, np.int32)}
            for k in kr.WEIGHT_KEYS:
                rec[k] = np.asarray(p[k], np.uint32)
            for k in kr.FLOAT_KEYS:
                rec[k] = np.asarray(p[k], np.float32)
        path = os.path.join(out_dir, f"layer{j}.bdv")
        kr.write_case(path, rec)
        paths.append(path)
    return paths


def write_pointwise_file(path, shape, n_in_bits, n_act, n_out, rng):
    """A binary pointwise/conv layer: packed sign weights [out][ceil(in/32)], thresholds over
    the n_act binarized channels, folded mul/bias, PReLU slope 0 (= ReLU)."""
    kr = _kernel_ref()
    rec = {"shape": np.array(shape, np.int32),
           "weights": kr.pack_bits(rng.normal(size=(n_out, n_in_bits)) < 0).astype(np.uint32),
           "t0": rng.normal(0, 0.2, n_act).astype(np.float32),
           "t1": rng.normal(0, 0.2, n_act).astype(np.float32),
           "mul": rng.uniform(0.01, 0.1, n_out).astype(np.float32),
           "bias": rng.normal(0, 0.1, n_out).astype(np.float32),
           "slope": np.zeros(n_out, np.float32)}
    kr.write_case(path, rec)
    return path


# ------------------------------------------------------------------ counts
def per_entry(region, counts):
    """Region totals divided by its entry count: {'insns', 'classes', 'mnemonics'}."""
    n = max(region["entries"], 1)
    out = {"insns": region["insns"] / n,
           "classes": {k: v / n for k, v in region["classes"].items()}}
    if "mnemonics" in region:
        out["mnemonics"] = {k: v / n for k, v in region["mnemonics"].items()}
    return out


def scaled(c, factor):
    out = {"insns": c["insns"] * factor,
           "classes": {k: v * factor for k, v in c["classes"].items()}}
    if "mnemonics" in c:
        out["mnemonics"] = {k: v * factor for k, v in c["mnemonics"].items()}
    return out


def add(*cs):
    out = {"insns": 0.0, "classes": {}, "mnemonics": {}}
    for c in cs:
        out["insns"] += c["insns"]
        for k, v in c["classes"].items():
            out["classes"][k] = out["classes"].get(k, 0.0) + v
        for k, v in c.get("mnemonics", {}).items():
            out["mnemonics"][k] = out["mnemonics"].get(k, 0.0) + v
    return out


def groups(c):
    tot = max(c["insns"], 1.0)
    return {g: sum(c["classes"].get(k, 0.0) for k in ks) / tot for g, ks in CLASS_GROUPS.items()}


def mn(c, *names):
    m = c.get("mnemonics", {})
    return sum(m.get(n, 0.0) for n in names)


def region(counts, rid):
    r = counts["regions"].get(str(rid))
    if r is None:
        raise RuntimeError(f"region {rid} missing from plugin output")
    return r


# ------------------------------------------------------------------ main measurement
def measure(args, work):
    t0 = time.time()
    L, T, C, H = args.layers, args.T, args.C, args.H
    files = write_layer_files(work, L, T, C, H, args.left, args.right, seed=args.seed)
    img = 4 * T                      # mel image side (32 for T = 8)
    feat = (img // 4) * 32           # linear input features per frame (256)
    rng = np.random.default_rng(args.seed + 7)
    lin = write_pointwise_file(os.path.join(work, "linear.bdv"), (T, feat, C), feat, feat, C, rng)
    conv2 = write_pointwise_file(os.path.join(work, "conv2.bdv"),
                                 (img // 2, img // 2, 16, 32, 5, 2), 5 * 5 * 16, 16, 32, rng)
    argv = [BENCH, "--runs", str(args.runs), "--stages", "--check", "--linear", lin,
            "--conv2", conv2] + files
    out_b, cb = run_counted(argv, os.path.join(work, "bitwise.json"), work)
    if "check max_scaled_err" in out_b and " ok" not in out_b.split("check max_scaled_err")[1].split("\n")[0]:
        raise RuntimeError("bitwise kernel output does not match the reference:\n" + out_b)

    res = {"bitwise": {}, "float": {}, "meta": {}}
    bit = res["bitwise"]
    bit["backbone"] = per_entry(region(cb, 0), cb)
    bit["layers"] = [per_entry(region(cb, 20 + j), cb) for j in range(L)]
    bit["stages"] = {name: scaled(per_entry(region(cb, rid), cb), L) for rid, name in STAGES}
    bit["linear"] = per_entry(region(cb, 30), cb)
    bit["conv2_proxy"] = per_entry(region(cb, 31), cb)
    bit["conv2_sub"] = {n: per_entry(region(cb, r), cb)
                        for r, n in ((32, "binarize"), (33, "im2col"), (34, "gemm"))}

    flt = res["float"]
    uarch = args.uarch
    if uarch == "a53" and not a53_namespace_works():
        uarch = "generic (a53 requested: unshare -m / bind mount not permitted here)"
    cpuinfo = A53_CPUINFO if uarch == "a53" else None
    argv = [FLOAT, "--runs", str(args.runs), "--layers", str(L), "--T", str(T), "--C", str(C),
            "--H", str(H), "--left", str(args.left), "--right", str(args.right), "--classes",
            str(args.classes), "--model", "--check"]
    out_f, cf = run_counted(argv, os.path.join(work, "float.json"), work, dynamic=True,
                            cpuinfo=cpuinfo)
    if "FAIL" in out_f:
        raise RuntimeError("XNNPACK layer does not match its reference:\n" + out_f)
    flt["backbone"] = per_entry(region(cf, 0), cf)
    flt["layers"] = [per_entry(region(cf, 20 + j), cf) for j in range(L)]
    runs = args.runs
    flt["ops"] = {name: scaled(region(cf, rid), 1.0 / runs) for rid, name in FLOAT_OPS}
    for rid, name in ((40, "conv1"), (41, "conv2"), (42, "linear"), (43, "classifier"),
                      (44, "model")):
        flt[name] = per_entry(region(cf, rid), cf)
    res["meta"] = {"uarch": uarch, "qemu_cpu": CPU, "runs": runs, "T": T, "C": C, "H": H,
                   "layers": L, "kernel_path": "neon", "seconds": round(time.time() - t0, 1),
                   "bitwise_check": [ln for ln in out_b.splitlines() if ln.startswith(("check", "stages"))],
                   "float_check": [ln for ln in out_f.splitlines() if ln.startswith("check")]}
    return res


def compose(res):
    """Whole-model counts per depth (sum of measured parts) and the ratios."""
    bit, flt = res["bitwise"], res["float"]
    L = len(bit["layers"])
    model = {}
    for d, layer_set in depth_sets(L).items():
        parts = {"conv1 (float, XNNPACK)": flt["conv1"],
                 "conv2 (binary proxy)": bit["conv2_proxy"],
                 "linear (binary)": bit["linear"],
                 f"backbone d{d} (bitwise)": add(*[bit["layers"][j] for j in layer_set]),
                 "classifier (float, XNNPACK)": flt["classifier"]}
        model[d] = {"parts": {k: v["insns"] for k, v in parts.items()},
                    "insns": sum(v["insns"] for v in parts.values())}
    teacher = flt["model"]["insns"]
    teacher_parts = {"conv1": flt["conv1"]["insns"], "conv2": flt["conv2"]["insns"],
                     "linear": flt["linear"]["insns"], "backbone": flt["backbone"]["insns"],
                     "classifier": flt["classifier"]["insns"]}
    return {
        "backbone_instruction_ratio": flt["backbone"]["insns"] / bit["backbone"]["insns"],
        "layer_instruction_ratio": flt["layers"][0]["insns"] / bit["layers"][0]["insns"],
        "model_instruction_ratio": {str(d): teacher / m["insns"] for d, m in model.items()},
        "binary_model": model,
        "teacher_model_insns": teacher,
        "teacher_parts": teacher_parts,
    }


def limits(res):
    """Instruction-level account of the bitwise backbone (per inference, all layers), from
    the per-stage regions and their mnemonic histograms: per stage the instructions per output
    and, for the two pointwise GEMMs, the XOR / popcount / pairwise-reduction instructions next
    to the ideal of 3 per 128 weight bits and bit plane (EOR, CNT, one accumulate)."""
    meta = res["meta"]
    L, T, C, H = meta["layers"], meta["T"], meta["C"], meta["H"]
    st = res["bitwise"]["stages"]
    stage_total = sum(v["insns"] for v in st.values())
    outputs = {"binarize_x": L * T * C, "memory_block+pw1_binarize": L * T * C,
               "pw1_gemm_post+pw2_binarize": L * T * H, "pw2_gemm_post_residual": L * T * C}
    per_stage = {}
    for k, v in st.items():
        n = outputs[k]
        d = {"insns": v["insns"], "outputs": n, "per_output": v["insns"] / n,
             "share": v["insns"] / stage_total}
        if k.startswith("pw"):
            bits = C if k.startswith("pw1") else H  # K of the GEMM
            core = {m: mn(v, m) for m in GEMM_MNEMONICS}
            d["gemm_core"] = core
            d["gemm_core_per_output"] = sum(core.values()) / n
            d["ideal_per_output"] = 3 * -(-bits // 128) * 2  # 2 bit planes
        per_stage[k] = d
    fl = res["float"]["ops"]
    fc = add(fl["fc1+relu"], fl["fc2"])
    # float counterpart of the memory block: dwconv + one prelu + one add per layer
    float_mem = fl["dwconv"]["insns"] + (fl["prelu x2"]["insns"] + fl["add x2"]["insns"]) / 2
    return {
        "stage_total": stage_total,
        "stage_share": {k: v["insns"] / stage_total for k, v in st.items()},
        "stages": per_stage,
        "memory_block_float_counterpart": float_mem,
        "float_fc_fmla": mn(fc, "fmla"),
        "float_fc_insns": fc["insns"],
        "float_fc_per_output": fc["insns"] / (L * T * (H + C)),
    }


# ------------------------------------------------------------------ report
def fmt(n):
    return f"{n:,.0f}"


def latency_ms(insns):
    lo, hi = IPC_RANGE
    return insns / (hi * CLOCK_HZ) * 1e3, insns / (lo * CLOCK_HZ) * 1e3


def report(res, comp, lim, args):
    bit, flt, meta = res["bitwise"], res["float"], res["meta"]
    C_BITS_NOTE = (f"{meta['C']} bits (pw1) and {meta['H']} bits (pw2), i.e. "
                   f"{-(-meta['C'] // 128)} and {-(-meta['H'] // 128)} q-words")
    p = print
    p(f"Instructions per inference on emulated ARMv8 (qemu-aarch64 -cpu {meta['qemu_cpu']}, "
      f"insn_count plugin; T={meta['T']} C={meta['C']} H={meta['H']}, {meta['layers']} layers, "
      f"{meta['runs']} counted runs each)")
    p(f"bitwise: lce_kernels/core NEON path, -O2 static. float: XNNPACK f32 operators "
      f"(Debian libxnnpack 2022-02), kernels chosen for uarch = {meta['uarch']}")
    p("")
    p(f"{'part':44s} {'float (XNNPACK)':>16s} {'bitwise':>12s} {'ratio':>7s}")
    rows = [("one DFSMN layer (layer 0)", flt["layers"][0], bit["layers"][0]),
            (f"backbone, {meta['layers']} layers", flt["backbone"], bit["backbone"]),
            ("linear 256->128 (binary in the student)", flt["linear"], bit["linear"]),
            ("conv2 5x5 s2 16->32 (binary proxy)", flt["conv2"], bit["conv2_proxy"])]
    for name, f, b in rows:
        p(f"{name:44s} {fmt(f['insns']):>16s} {fmt(b['insns']):>12s} {f['insns'] / b['insns']:7.2f}")
    p(f"{'conv1 (float in both)':44s} {fmt(flt['conv1']['insns']):>16s}")
    p(f"{'classifier (float in both)':44s} {fmt(flt['classifier']['insns']):>16s}")
    p("")
    p("Instruction classes (share of instructions):")
    p(f"{'':30s}" + "".join(f"{g:>12s}" for g in CLASS_GROUPS))
    for name, c in (("float backbone", flt["backbone"]), ("bitwise backbone", bit["backbone"]),
                    ("float model (teacher)", flt["model"])):
        p(f"{name:30s}" + "".join(f"{v * 100:11.1f}%" for v in groups(c).values()))
    p("")
    p("Bitwise backbone by stage (per inference, all layers; Layer::EvalStage, the passes of "
      "Eval):")
    p(f"  {'stage':32s} {'insns':>12s}  {'share':>5s}  {'per output':>10s}  "
      f"{'xor/cnt/reduce':>14s}  {'ideal':>5s}")
    for k, v in lim["stages"].items():
        core = (f"{v['gemm_core_per_output']:14.2f}  {v['ideal_per_output']:5d}"
                if "gemm_core" in v else f"{'':14s}  {'':5s}")
        p(f"  {k:32s} {fmt(v['insns']):>12s}  {v['share'] * 100:4.1f}%  "
          f"{v['per_output']:10.2f}  {core}")
    p("  (outputs: channels x frames of x / m for the first two, pw1 / pw2 outputs for the "
      "GEMMs; ideal: 3 instructions per 128 weight bits and bit plane, EOR + CNT + accumulate)")
    p("Float backbone by XNNPACK operator (per inference, all layers):")
    for k, v in flt["ops"].items():
        p(f"  {k:32s} {fmt(v['insns']):>12s}  {v['insns'] / flt['backbone']['insns'] * 100:5.1f}%")
    p("")
    p("Whole model per depth (binary = float conv1 + binary conv2 proxy + binary linear + "
      "bitwise layers + float classifier: SUM of separately measured regions; teacher depth 8 "
      "measured end to end):")
    p(f"  float teacher d{meta['layers']}: {fmt(comp['teacher_model_insns'])}  (parts: " +
      ", ".join(f"{k} {fmt(v)}" for k, v in comp["teacher_parts"].items()) + ")")
    for d, m in comp["binary_model"].items():
        lo, hi = latency_ms(m["insns"])
        p(f"  binary d{d}: {fmt(m['insns']):>12s}  teacher/binary = "
          f"{comp['model_instruction_ratio'][str(d)]:5.2f}   est. {lo:.3f}-{hi:.3f} ms")
        p("      " + ", ".join(f"{k} {fmt(v)}" for k, v in m["parts"].items()))
    lo, hi = latency_ms(comp["teacher_model_insns"])
    p(f"  float teacher d{meta['layers']} est. {lo:.3f}-{hi:.3f} ms")
    p("")
    p(latency_note())
    p("")
    p(f"Depth-{meta['layers']} backbone ratio {comp['backbone_instruction_ratio']:.2f}x "
      "(paper: 25.1x speedup, a wall-clock figure against its own float baseline). "
      "What limits it (per inference, all layers):")
    sg = lim["stages"]
    pw1, pw2 = sg["pw1_gemm_post+pw2_binarize"], sg["pw2_gemm_post_residual"]
    p(f"  - pointwise GEMMs: blocks of 4 weight rows x 2 frames x both bit planes; per 128 "
      "weight bits and plane one EOR and one CNT, the byte counts reduced by pairwise adds "
      "(ADDP) shared across rows, frames and planes (16-bit widening only at the end): "
      f"{pw1['gemm_core_per_output']:.2f} (pw1, K = {meta['C']} bits) and "
      f"{pw2['gemm_core_per_output']:.2f} (pw2, K = {meta['H']}) XOR/popcount/reduce per output "
      f"against the 3-per-128-bits ideal of {pw1['ideal_per_output']} and "
      f"{pw2['ideal_per_output']} (pw2's two q-words are summed with one byte ADD, counted "
      "apart). The rest of these stages, "
      f"{pw1['per_output'] - pw1['gemm_core_per_output']:.1f} and "
      f"{pw2['per_output'] - pw2['gemm_core_per_output']:.1f} per output, is fused "
      "post-processing, 4 outputs per NEON op: P = K - 2n (widening), int->float, P1 + s*P2, "
      "folded BN, PReLU (max(z, a z): 2 instructions, exact while every slope <= 1, else "
      "compare + select), residual, store, and in pw1 the pw2 binarization of the fresh outputs "
      "(9 instructions per 4 channels). Float XNNPACK spends "
      f"{lim['float_fc_per_output']:.1f} instructions per output ({fmt(lim['float_fc_fmla'])} FMLA "
      f"of {fmt(lim['float_fc_insns'])}).")
    p("  - the float order of the layer is fixed (portable = NEON = AVX-512, bit for bit), so "
      "the binarizations cost FCMGT, select, FSUB, FCMGT, FABD, FADD per 4 channels (a sign "
      "as one compare, |r| as one FABD: the same bits as the portable subtract-and-test) "
      "and two BIT to insert the sign bits into 16-channel patterns (two pairwise adds and two "
      f"lane stores per 16 channels): binarize_x {sg['binarize_x']['per_output']:.2f} "
      "instructions per channel and frame.")
    mem = sg["memory_block+pw1_binarize"]
    p(f"  - memory block + pw1 binarization: {fmt(mem['insns'])} = {mem['share'] * 100:.0f}% "
      f"({mem['per_output']:.1f} per channel and frame): per 128 channels the taps' XOR words in "
      "q registers, plane-1 counts bit-sliced (full adders), per 16 channels one TBL + CMTST per "
      "tap for the 5-bit code of the plane-2 signs and S2 looked up (4 TBL + 8 ZIP) in a "
      "32-entry table built per frame by the portable additions; W per window precomputed; "
      f"XNNPACK's depthwise conv + PReLU + add take {fmt(lim['memory_block_float_counterpart'])}.")


def latency_note():
    lo, hi = IPC_RANGE
    return (f"Latency estimate: instructions / (IPC x {CLOCK_HZ / 1e9:.1f} GHz) with IPC {lo}-{hi}: "
            "the Cortex-A53 is in-order dual-issue but its NEON datapath is 64-bit, so a Q-form "
            "NEON instruction (eor/cnt/uadalp/fmla .16b/.4s) occupies it for 2 cycles (IPC ~0.5 "
            "for NEON-bound loops); dual-issued loads/INS and scalar work raise it toward 1. "
            "Counts are exact; the cycles are an estimate (no caches, no stalls modelled).")


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_integer("T", 8, "Frames per inference.")
    flags.DEFINE_integer("C", 128, "Backbone channels.")
    flags.DEFINE_integer("H", 256, "Hidden width of the pointwise pair.")
    flags.DEFINE_integer("left", 2, "Memory block left context.")
    flags.DEFINE_integer("right", 2, "Memory block right context.")
    flags.DEFINE_integer("layers", 8, "Backbone layers (model: 8).", lower_bound=1, upper_bound=8)
    flags.DEFINE_integer("classes", 12, "Classifier outputs.")
    flags.DEFINE_integer("runs", 3, "Counted runs per region.")
    flags.DEFINE_integer("seed", 0, "Seed of the random weights (counts barely depend on them).")
    flags.DEFINE_enum("uarch", "a53", ["a53", "generic"], "XNNPACK kernel choice (module doc).")
    flags.DEFINE_string("out_dir", None, "Keep parameter files / raw counts here (default: a "
                        "temporary folder, removed).")
    flags.DEFINE_list("models", None, "Model files counted whole (one inference each) in the "
                      "aarch64 firmware (firmware_sim/model_cost.py); default: the float teacher "
                      "d8, the int8 teacher d8 and bifsmnv2_binary_d8/d4/d2/d1 of "
                      "pretrained/real8/exports that exist; '' for none. Streaming exports "
                      "(pipeline.export --streaming) are counted hop by hop (--hops).")
    flags.DEFINE_integer("hops", model_cost.DEFAULT_HOPS, "Streaming models in --models: hops "
                         "counted from zero state (the mean is instructions per hop).",
                         lower_bound=1, upper_bound=1000)
    cli_vocabulary.define_aliases("firmware_sim.cost")  # --work_dir (old name of --out_dir)


def main(argv):
    del argv
    args = types.SimpleNamespace(**{k: FLAGS[k].value for k in (
        "T", "C", "H", "left", "right", "layers", "classes", "runs", "seed", "uarch",
        "out_dir")})
    small = [f"--{k} {getattr(args, k)}" for k in ("T", "C", "H", "classes", "runs")
             if getattr(args, k) < 1] + [f"--{k} {getattr(args, k)}" for k in ("left", "right")
                                         if getattr(args, k) < 0]
    if small:
        raise app.UsageError(f"{', '.join(small)}: expected T, C, H, classes, runs >= 1 and "
                             "left, right >= 0")
    why = missing_tools()
    if why:
        raise cli.UserError("cannot run: " + "; ".join(why))
    output_paths.check_dir(args.out_dir, "--out_dir")
    build()
    work = args.out_dir or tempfile.mkdtemp(prefix="fw_cost_")
    os.makedirs(work, exist_ok=True)
    try:
        res = measure(args, work)
    finally:
        if args.out_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    comp = compose(res)
    lim = limits(res)
    report(res, comp, lim, args)
    # Whole model files in the firmware (model_cost.py): model_instruction_ratio.
    paths = model_cost.default_models() if FLAGS.models is None else [m for m in FLAGS.models if m]
    models = []
    if paths:
        mwork = args.out_dir or tempfile.mkdtemp(prefix="fw_models_")
        try:
            cpuinfo = None
            if res["meta"]["uarch"] == "a53":
                cpuinfo = os.path.join(mwork, "cpuinfo")
                with open(cpuinfo, "w") as f:
                    f.write(A53_CPUINFO)
            models = model_cost.measure(paths, mwork, runs=args.runs, cpuinfo=cpuinfo,
                                        hops=FLAGS.hops)
        finally:
            if args.out_dir is None:
                shutil.rmtree(mwork, ignore_errors=True)
        print("")
        model_cost.report(models, res["meta"]["uarch"])
    ms = model_cost.summary(models, res["meta"]["uarch"])
    raw = {
        "bitwise": {"layer": [c["insns"] for c in res["bitwise"]["layers"]],
                    "backbone": res["bitwise"]["backbone"]["insns"],
                    "stages": {k: v["insns"] for k, v in res["bitwise"]["stages"].items()},
                    "linear": res["bitwise"]["linear"]["insns"],
                    "conv2_proxy": res["bitwise"]["conv2_proxy"]["insns"],
                    "conv2_proxy_sub": {k: v["insns"] for k, v in res["bitwise"]["conv2_sub"].items()},
                    "backbone_classes": res["bitwise"]["backbone"]["classes"]},
        "float": {"layer": [c["insns"] for c in res["float"]["layers"]],
                  "backbone": res["float"]["backbone"]["insns"],
                  "ops": {k: v["insns"] for k, v in res["float"]["ops"].items()},
                  "conv1": res["float"]["conv1"]["insns"], "conv2": res["float"]["conv2"]["insns"],
                  "linear": res["float"]["linear"]["insns"],
                  "classifier": res["float"]["classifier"]["insns"],
                  "model": res["float"]["model"]["insns"],
                  "backbone_classes": res["float"]["backbone"]["classes"]},
    }
    out = {
        "backbone_instruction_ratio": round(comp["backbone_instruction_ratio"], 4),
        "layer_instruction_ratio": round(comp["layer_instruction_ratio"], 4),
        "model_instruction_ratio": ms["model_instruction_ratio"],
        "model_instruction_ratio_sum_of_regions": {
            k: round(v, 4) for k, v in comp["model_instruction_ratio"].items()},
        "binary_model_insns": {str(r["depth"]): r["insns"] for r in models
                               if r["flavor"] == "binary" and not r.get("streaming")},
        "binary_model_insns_sum_of_regions": {
            str(d): m["insns"] for d, m in comp["binary_model"].items()},
        "model_insns": ms["model_insns"],
        "float_teacher": ms["float_teacher"],
        "binary_runtime": ms["binary_runtime"],
        "streaming_hop_insns": ms["streaming_hop_insns"],
        "streaming_insns_per_second": ms["streaming_insns_per_second"],
        "streaming_models": ms["streaming_models"],
        "streaming_vs_windowed": ms["streaming_vs_windowed"],
        "teacher_model_insns": comp["teacher_model_insns"],
        "latency_ms_a53_1p2ghz": {
            "ipc_range": list(IPC_RANGE),
            f"teacher_d{res['meta']['layers']}": [round(v, 4) for v in latency_ms(comp["teacher_model_insns"])],
            **{f"binary_d{d}": [round(v, 4) for v in latency_ms(m["insns"])]
               for d, m in comp["binary_model"].items()}},
        "limits": lim,
        "raw": raw,
        "meta": res["meta"],
        "measured": "every count is measured in a marked region under qemu; "
                    "model_instruction_ratio / binary_model_insns: one Invoke() of each model "
                    "file in the firmware; *_sum_of_regions: sums of the drivers' separately "
                    "measured parts (conv2 binary a proxy)",
        "models": [{k: v for k, v in m.items() if k != "ops"} for m in models],  # per op type
    }
    print(json.dumps(out))
    return out  # --json_out (full detail)


if __name__ == "__main__":
    cli.run(main, define=define_flags)
