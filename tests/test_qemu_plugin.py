"""The insn_count qemu plugin (firmware_sim/qemu_plugin) counts exactly the instructions a
guest executes inside its marked regions, split by class.

The guest is a hand-written aarch64 assembly program without libc (so every executed
instruction is known): a loop outside any region, a 1000-iteration loop of 13 instructions
covering every class inside region 0, a region entered 5 times, nested regions, and one
END of a region that was never opened (must be reported as an error, not counted).
"""
import json
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FW = os.path.join(ROOT, "firmware_sim")
PLUGIN = os.path.join(FW, "build", "insn_count.so")

TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-gcc", "gcc", "make")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"needs {', '.join(MISSING)} (make setup: gcc-aarch64-linux-gnu, qemu-user)")


def begin(i):
    return 0xD296001F | (i << 5)


def end(i):
    return 0xD29C001F | (i << 5)


N = 1000
PROGRAM = f"""
    .text
    .global _start
_start:
    mov x1, #100
0:  add x0, x0, #1
    subs x1, x1, #1
    b.ne 0b
    sub sp, sp, #64
    mov x9, #{N}
    .inst {begin(0):#x}
1:  add x0, x0, #1
    eor v0.16b, v0.16b, v1.16b
    cnt v2.16b, v0.16b
    fadd s3, s3, s4
    ldr x10, [sp]
    str x10, [sp, #8]
    ldr q5, [sp, #16]
    str q5, [sp, #32]
    ld1 {{v6.16b}}, [sp]
    stp x10, x11, [sp, #16]
    ldp x12, x13, [sp]
    subs x9, x9, #1
    b.ne 1b
    .inst {end(0):#x}
    mov x9, #5
2:  .inst {begin(1):#x}
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    .inst {end(1):#x}
    subs x9, x9, #1
    b.ne 2b
    .inst {begin(2):#x}
    add x0, x0, #1
    .inst {begin(3):#x}
    add x0, x0, #1
    add x0, x0, #1
    .inst {end(3):#x}
    .inst {end(2):#x}
    .inst {end(9):#x}
    add sp, sp, #64
    mov x0, #0
    mov x8, #93
    svc #0
"""
# executed instructions (markers excluded): 1 + 3*100 + 2 before region 0, 13*N in it,
# 1 + 5*(7 + 2) around/in region 1, 3 in region 2 (2 of them in region 3), 4 at the end
ALL = 303 + 13 * N + 1 + 5 * 9 + 3 + 4


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    r = subprocess.run(["make", "-s", "-j1", "-C", FW, "plugin"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    d = tmp_path_factory.mktemp("plugin")
    src, exe, out = d / "prog.S", d / "prog", d / "counts.json"
    src.write_text(PROGRAM)
    r = subprocess.run(["aarch64-linux-gnu-gcc", "-nostdlib", "-static", "-o", str(exe), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["qemu-aarch64", "-cpu", "cortex-a53", "-plugin",
                        f"{PLUGIN},out={out},mnemonics=on", str(exe)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_region_count_and_classes_exact(counts):
    r0 = counts["regions"]["0"]
    assert r0["entries"] == 1 and not r0["open_at_exit"]
    assert r0["insns"] == 13 * N
    assert r0["classes"] == {"int": 2 * N, "branch": N, "load": 2 * N, "store": 2 * N,
                             "simd_load": 2 * N, "simd_store": N, "simd": 2 * N, "fp": N,
                             "other": 0}


def test_outside_not_counted(counts):
    # the whole run is counted exactly too, so everything outside the regions is known
    assert counts["all"]["insns"] == ALL
    inside = sum(counts["regions"][k]["insns"] for k in ("0", "1", "2"))
    assert ALL - inside == 303 + 1 + 5 * 2 + 4


def test_repeated_and_nested_regions(counts):
    r1, r2, r3 = (counts["regions"][k] for k in ("1", "2", "3"))
    assert (r1["entries"], r1["insns"], r1["classes"]["branch"]) == (5, 35, 35)  # NOP = hint
    assert (r2["entries"], r2["insns"]) == (1, 3)
    assert (r3["entries"], r3["insns"]) == (1, 2)
    assert counts["markers_executed"] == 2 + 10 + 4 + 1


def test_unbalanced_marker_is_an_error(counts):
    assert counts["errors_total"] == 1
    assert "region 9" in counts["errors"][0]
    assert counts["regions"]["9"]["entries"] == 0 and counts["regions"]["9"]["insns"] == 0


def test_mnemonics(counts):
    if not counts["mnemonics_enabled"]:
        pytest.skip("this qemu build returns no disassembly")
    m = counts["regions"]["0"]["mnemonics"]
    assert m["cnt"] == N and m["eor"] == N and m["fadd"] == N and m["subs"] == N
    assert sum(m.values()) == 13 * N
