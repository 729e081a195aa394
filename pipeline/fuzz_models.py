"""Fuzz harness: damaged variants of every export flavor, each run the way the tools run a model.

Reads: the exports in --exports_dir (or --models), their sidecar JSON; --data_dir for the CLI
  sample (default: a tiny generated test-set folder).
Writes: the non-ok variants and their recipes into --out_dir (optional); the counts
  (--json_out); prints a table per file and one JSON line.

    python -m pipeline.fuzz_models                        # 300 variants of each flavor's d2
    python -m pipeline.fuzz_models --depths all --variants 50 --json_out build/fuzz.json
    python -m pipeline.fuzz_models --sanitize             # project ops under ASan/UBSan
    python -m pipeline.fuzz_models --models F.tflite --seed 0 --only 17 --out_dir build/v

Flavors are discovered from the files (``<flavor>_d<depth>.tflite`` in ``--exports_dir``), so a
new flavor is fuzzed as soon as it is exported. For each file the variants of
``pipeline.fuzz_variants`` (byte / bit flips, truncations, zeroed runs, targeted schema edits;
deterministic for ``--seed``) are written one at a time to a temporary file, with the
original's sidecar JSON next to it (``--sidecar rehash``, the default, updates any SHA-256 of
the original recorded in it to the variant's, as a deliberate attacker would, so that what is
tested is the structural verification and not only the digest; ``copy`` keeps it as is), and
sent to a worker (``pipeline.fuzz_worker``: imports TensorFlow once, runs
``predictors.load_predictor`` + ``predict`` and the tools' user-error classification).

Each variant ends in one class: ``ok`` (it ran; its output is compared with the original's:
``changed`` counts outputs that differ), ``refused`` (a user error with a message: what the
tools print before exiting 2), or a failure: ``signal`` (the worker died by a signal),
``hang`` (no answer within ``--timeout``), ``traceback`` (an exception that is not a user
error), ``exit`` (the worker exited without answering) or ``sanitizer`` (an AddressSanitizer /
UBSan report in its stderr). After a signal, hang or exit the worker is restarted.
``--cli_sample N`` also runs N variants per flavor (of its first file: the smallest depth)
through the real CLI (``python -m
pipeline.evaluate``, on a tiny generated test-set folder unless ``--data_dir``): exit 0 or 2
and no traceback is what passes.

``--sanitize`` runs the worker with the ASan/UBSan build of the op library
(``lce_kernels/build/asan/libbdfsmn_op.so``, ``make -C lce_kernels op-asan``) preloaded with
``libasan`` over the files whose models hold ``lce_kernels.ops.BDFSMN`` ops.

Output: a table per file, the first ``--examples`` non-ok variants of each class with how they
were made and the first lines of their message / stderr, and one final JSON line of counts
(also written to ``--json_out``). Exit code 0 only when there is no failure; 1 when there is;
2 when the harness itself cannot run (bad flags, a worker that does not start, an original
model that does not run).
"""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from typing import Dict, List, Optional

import numpy as np

from lce_kernels import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
ASAN_OP_LIB = ops.ASAN_OP_LIB
CLASSES = ("ok", "refused", "signal", "hang", "traceback", "exit", "sanitizer")
FAILURES = ("signal", "hang", "traceback", "exit", "sanitizer")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "AddressSanitizer:DEADLYSIGNAL")
# stderr lines that are noise in every TensorFlow process
_NOISE = ("Unable to register cu", "Created TensorFlow Lite XNNPACK delegate",
          "oneDNN custom operations", "TF_ENABLE_ONEDNN_OPTS", "To enable the following",
          "rebuild TensorFlow", "cpu_feature_guard", "== fuzz variant",
          "Using a while_loop for converting")
TRACEBACK_MARK = "Traceback (most recent call last)"


class HarnessError(RuntimeError):
    """The harness cannot run (not a finding about the models)."""


# -- discovery ---------------------------------------------------------------------------------
def discover(exports_dir: str, depths="2", flavors=None) -> List[str]:
    """The .tflite files to fuzz: every ``<flavor>_d<depth>.tflite`` at the given depths
    ('all' or a list such as '2' / '8,2'), optionally only some flavors. A flavor that has no
    file at a wanted depth is fuzzed at its smallest depth, so no flavor is left out."""
    from pipeline.fuzz_variants import FLAVOR_RE, flavor_of
    files = sorted(glob.glob(os.path.join(exports_dir, "*.tflite")))
    if not files:
        raise HarnessError(f"no .tflite files in {exports_dir}")
    by_flavor: Dict[str, Dict[int, str]] = {}
    for f in files:
        m = FLAVOR_RE.match(os.path.splitext(os.path.basename(f))[0])
        by_flavor.setdefault(flavor_of(f), {})[int(m.group("depth")) if m else 0] = f
    if flavors:
        unknown = sorted(set(flavors) - set(by_flavor))
        if unknown:
            raise HarnessError(f"no files of flavor(s) {unknown} in {exports_dir} (there are "
                               f"{sorted(by_flavor)})")
        by_flavor = {k: v for k, v in by_flavor.items() if k in flavors}
    chosen = []
    for flavor, files_at in sorted(by_flavor.items()):
        if depths == "all":
            chosen += [files_at[d] for d in sorted(files_at)]
            continue
        wanted = [int(d) for d in str(depths).split(",")]
        hit = [files_at[d] for d in wanted if d in files_at]
        chosen += hit or [files_at[min(files_at)]]
    return chosen


def has_own_ops(path: str) -> bool:
    from models.lce_census import has_own_ops as has
    with open(path, "rb") as f:
        return has(f.read())


# -- the worker process ------------------------------------------------------------------------
def sanitizer_env(base=None) -> Dict[str, str]:
    """Environment for a Python process that loads an ASan/UBSan-built shared library: the
    ASan runtime preloaded (it must come first), reports that stop the process."""
    env = dict(os.environ if base is None else base)
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        out = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True,
                             text=True).stdout.strip()
        if not out or not os.path.isabs(out) or not os.path.exists(out):
            raise HarnessError(f"cannot find {name} (g++ -print-file-name={name} gave "
                               f"{out!r}): install g++ with its sanitizer runtimes")
        libs.append(os.path.realpath(out))
    env["LD_PRELOAD"] = ":".join(libs + ([env["LD_PRELOAD"]] if env.get("LD_PRELOAD") else []))
    env["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:"
                           "detect_odr_violation=0:alloc_dealloc_mismatch=0:"
                           "handle_segv=1:print_summary=1")
    env["UBSAN_OPTIONS"] = "halt_on_error=1:abort_on_error=1:print_stacktrace=1"
    return env


class Worker:
    """A ``pipeline.fuzz_worker`` process (or any command speaking its protocol), restarted
    after it dies or hangs. Its stderr goes to one file; each request gets the part written
    while it ran."""

    def __init__(self, cmd: List[str], stderr_path: str, env=None, cwd=ROOT,
                 startup_timeout=300.0):
        self.cmd, self.stderr_path, self.env, self.cwd = cmd, stderr_path, env, cwd
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.ready: Dict = {}
        self.starts = 0
        self.op_libs = set()      # op libraries the worker reported loaded (--op_lib runs)
        self._buf = b""
        self._offset = 0          # stderr offset at the last request

    def start(self):
        err = open(self.stderr_path, "ab")
        offset = err.tell()
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, cwd=self.cwd,
                                         env=self.env)
        except OSError as e:
            raise HarnessError(f"cannot start the worker {self.cmd}: {e}") from e
        finally:
            err.close()
        self.starts += 1
        self._buf = b""
        line, how = self._read_line(self.startup_timeout)
        if line is None:
            rc = self._reap() if how == "eof" else self.stop()
            raise HarnessError(f"the worker did not start ({how}, exit code {rc}): "
                               + self._stderr_since(offset)[-2000:])
        self.ready = json.loads(line)
        self.op_libs.update(self.ready.get("op_libs") or [])

    def stop(self):
        """Kill the worker (it is ours: by its own handle) and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self._reap()

    def _reap(self):
        try:
            rc = self.proc.wait(timeout=60)     # it closed its pipe: it is exiting
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc = None
        return rc

    def _read_line(self, timeout):
        """(line, 'ok') or (None, 'eof' | 'timeout')."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, "timeout"
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None, "eof"
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(), "ok"

    def _stderr_since(self, offset):
        with open(self.stderr_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def request(self, req: Dict, timeout: float) -> Dict:
        """Send one request. Returns ``{"outcome": "reply" | "signal" | "exit" | "hang",
        "reply": dict or None, "returncode": int or None, "stderr": str, "late": ...}``;
        ``late`` is ``{"returncode", "stderr"}`` when the worker had died AFTER answering the
        previous request (the caller charges that death to the previous variant), else None."""
        late = None
        if self.proc is not None and self.proc.poll() is not None:
            late = {"returncode": self._reap(), "stderr": self._stderr_since(self._offset)}
        if self.proc is None:
            self.start()
        offset = self._offset = os.path.getsize(self.stderr_path)
        line, how = None, "eof"
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            line, how = self._read_line(timeout)
        except (BrokenPipeError, ConnectionResetError):
            pass
        rc = None
        if line is None:
            rc = self.stop() if how == "timeout" else self._reap()
            outcome = "hang" if how == "timeout" else ("signal" if rc < 0 else "exit")
        else:
            outcome = "reply"
        reply = None
        if line is not None:
            try:
                reply = json.loads(line)
                self.op_libs.update(reply.get("op_libs") or [])
            except ValueError:
                rc, outcome = self.stop(), "exit"
        return {"outcome": outcome, "reply": reply, "returncode": rc,
                "stderr": self._stderr_since(offset), "late": late}


def worker_command(op_lib=None, memory_gib=0.0) -> List[str]:
    cmd = [sys.executable, "-m", "pipeline.fuzz_worker"]
    if op_lib:
        cmd += ["--op_lib", op_lib]
    if memory_gib:
        cmd += ["--memory_gib", str(memory_gib)]
    return cmd


# -- classification ----------------------------------------------------------------------------
def signal_name(rc: int) -> str:
    try:
        return f"signal {-rc} ({signal.Signals(-rc).name})"
    except ValueError:
        return f"signal {-rc}"


def stderr_head(text: str, lines=8) -> List[str]:
    """The first informative lines of a stderr excerpt (TensorFlow's start-up noise dropped)."""
    keep = [l.rstrip() for l in text.splitlines() if l.strip() and not any(
        n in l for n in _NOISE)]
    return keep[:lines]


def sanitizer_report(stderr: str) -> Optional[Dict]:
    """{"detail": the report's headline, "stderr": its first stack frames} if stderr holds an
    ASan / UBSan / LSan report, else None (markers in SANITIZER_MARKERS, most telling first)."""
    lines = stderr.splitlines()
    for marker in SANITIZER_MARKERS:
        head = next((l.strip() for l in lines if marker in l), None)
        if head:
            frames = [l.strip() for l in lines if re.match(r"\s*#\d+ 0x", l)][:8]
            return {"detail": head, "stderr": frames or stderr_head(stderr, 12)}
    return None


def classify(res: Dict) -> Dict:
    """A worker answer -> {"class", "detail", ...} (see the module docstring)."""
    stderr = res.get("stderr", "")
    report = sanitizer_report(stderr)
    if report:
        return {"class": "sanitizer", **report}
    outcome = res["outcome"]
    if outcome == "signal":
        return {"class": "signal", "detail": signal_name(res["returncode"]),
                "stderr": stderr_head(stderr)}
    if outcome == "hang":
        return {"class": "hang", "detail": "no answer within the timeout",
                "stderr": stderr_head(stderr)}
    if outcome == "exit":
        return {"class": "exit", "detail": f"exit code {res['returncode']} without an answer",
                "stderr": stderr_head(stderr)}
    reply = res["reply"]
    status = reply.get("status")
    if status == "ok":
        return {"class": "ok", "result": reply.get("result", {})}
    if status == "refused":
        return {"class": "refused", "detail": reply.get("message", "")}
    return {"class": "traceback",
            "detail": f"{reply.get('exception')}: {reply.get('message', '')}"[:300],
            "stderr": traceback_frames(reply.get("traceback") or "")}


def traceback_frames(text: str, frames=4) -> List[str]:
    """The innermost ``frames`` 'File ..., line ..., in ...' lines of a Python traceback."""
    return [l.strip() for l in text.splitlines() if l.lstrip().startswith("File ")][-frames:]


def output_changed(result: Dict, baseline: Dict) -> bool:
    if result.get("output_shape") != baseline.get("output_shape"):
        return True
    a = np.asarray(result.get("output", []), np.float64)
    b = np.asarray(baseline.get("output", []), np.float64)
    return a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-3, equal_nan=False)


# -- variant files -----------------------------------------------------------------------------
def _replace_values(obj, old, new):
    if isinstance(obj, dict):
        return {k: _replace_values(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_values(v, old, new) for v in obj]
    return new if obj == old else obj


def write_variant(src, variant, folder: str, sidecar="rehash") -> str:
    """The variant as ``folder/<stem>__fuzz<index>.tflite`` plus its sidecar JSON."""
    stem = os.path.splitext(src.name)[0]
    path = os.path.join(folder, f"{stem}__fuzz{variant.index}.tflite")
    with open(path, "wb") as f:
        f.write(variant.data)
    if src.sidecar is not None:
        meta = copy.deepcopy(src.sidecar)
        if sidecar == "rehash":
            meta = _replace_values(meta, hashlib.sha256(src.data).hexdigest(),
                                   hashlib.sha256(variant.data).hexdigest())
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump(meta, f, indent=1)
    return path


def remove_variant(path: str):
    for p in (path, os.path.splitext(path)[0] + ".json"):
        if os.path.exists(p):
            os.remove(p)


# -- the run -----------------------------------------------------------------------------------
class Progress:
    """One status line on a terminal, a line every ``every`` steps otherwise."""

    def __init__(self, stream=sys.stderr, every=50):
        self.stream, self.every = stream, every
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, label, i, n, counts):
        if not self.tty and i % self.every and i != n:
            return
        text = f"{label}: {i}/{n} " + " ".join(f"{k} {v}" for k, v in counts.items() if v)
        self.stream.write(("\r" + text.ljust(100)) if self.tty else text + "\n")
        if self.tty and i == n:
            self.stream.write("\n")
        self.stream.flush()


def fuzz_file(path: str, worker: Worker, seed: int, count: int, folder: str, timeout: float,
              only=None, sidecar="rehash", keep_dir=None, progress=None) -> Dict:
    """Run ``count`` variants (or the indices in ``only``) of one file. Returns
    {"file", "flavor", "counts", "records": [...], "baseline": result}."""
    from pipeline.fuzz_variants import Source
    src = Source(path)
    base = worker.request({"path": path, "id": "original"}, timeout)
    base_c = classify(base)
    if base_c["class"] != "ok":
        raise HarnessError(f"the original {path} does not run ({base_c['class']}): "
                           f"{base_c.get('detail')} {base_c.get('stderr', '')}")
    baseline = base_c["result"]
    counts = {c: 0 for c in CLASSES}
    counts["changed"] = 0
    records = []
    indices = list(only) if only else list(range(count))
    for n, i in enumerate(indices, 1):
        v = src.variant(seed, i)
        vpath = write_variant(src, v, folder, sidecar)
        res = worker.request({"path": vpath, "id": f"{src.name}#{i}"}, timeout)
        if res["late"] and records:       # died after answering the previous variant
            prev = records[-1]
            late = classify({"outcome": "signal" if res["late"]["returncode"] < 0 else "exit",
                             "reply": None, **res["late"]})
            counts[prev["class"]] -= 1
            counts["changed"] -= bool(prev.pop("changed", False))
            prev.update(late, detail=late["detail"] + " (after it answered)")
            counts[prev["class"]] += 1
        c = classify(res)
        c["variant"] = v.recipe()
        c["describe"] = v.describe()
        if c["class"] == "ok":
            c["changed"] = output_changed(c["result"], baseline)
            counts["changed"] += c["changed"]
        counts[c["class"]] += 1
        records.append(c)
        if keep_dir and (c["class"] != "ok" or only):
            os.makedirs(keep_dir, exist_ok=True)
            kept = write_variant(src, v, keep_dir, sidecar)
            with open(os.path.splitext(kept)[0] + ".recipe.json", "w") as f:
                json.dump({k: c[k] for k in c if k != "result"}, f, indent=1, default=str)
        remove_variant(vpath)
        if progress:
            progress.update(src.name, n, len(indices),
                            {k: counts[k] for k in CLASSES})
    return {"file": path, "name": src.name, "flavor": src.flavor, "counts": counts,
            "records": records, "baseline": baseline, "source": src}


# -- the real CLI on a sample ------------------------------------------------------------------
def tiny_test_set(root: str, labels: List[str], per_class=2, seed=0) -> str:
    """A folder in the official test-set layout with ``per_class`` noise clips per class of
    the model (what the CLI sample evaluates on: its content does not matter, its reading
    does)."""
    rng = np.random.default_rng(seed)
    for label in labels:
        for i in range(per_class):
            path = os.path.join(root, label, f"{i:08x}_nohash_0.wav")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            x = (np.clip(rng.normal(0, 0.1, 16000), -1, 1) * 32767).astype("<i2")
            with wave.open(path, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(x.tobytes())
    if "_silence_" not in labels:
        os.makedirs(os.path.join(root, "_silence_"), exist_ok=True)
    return root


def classify_cli(rc: Optional[int], stderr: str) -> Dict:
    if rc is None:
        return {"class": "hang", "detail": "no exit within the timeout",
                "stderr": stderr_head(stderr)}
    report = sanitizer_report(stderr)
    if report:
        return {"class": "sanitizer", **report}
    if rc < 0:
        return {"class": "signal", "detail": signal_name(rc), "stderr": stderr_head(stderr)}
    if TRACEBACK_MARK in stderr:
        tail = stderr[stderr.rindex(TRACEBACK_MARK):]
        last = [l for l in tail.splitlines() if l.strip()][-1:]
        return {"class": "traceback", "detail": f"exit code {rc}: " + " ".join(last)[:300],
                "stderr": traceback_frames(tail)}
    if rc == 0:
        return {"class": "ok"}
    if rc == 2:
        head = stderr_head(stderr, 3)
        return {"class": "refused", "detail": head[-1] if head else "(no message)"}
    return {"class": "exit", "detail": f"exit code {rc} (expected 0 or 2)",
            "stderr": stderr_head(stderr)}


def pick_sample(records: List[Dict], n: int) -> List[Dict]:
    """Up to n records: one per class seen (failures first), then by index."""
    if n <= 0:
        return []
    chosen, seen = [], set()
    for cls in FAILURES + ("ok", "refused"):
        for r in records:
            if r["class"] == cls and cls not in seen:
                chosen.append(r)
                seen.add(cls)
                break
    for r in records:
        if len(chosen) >= n:
            break
        if r not in chosen:
            chosen.append(r)
    return sorted(chosen[:n], key=lambda r: r["variant"]["index"])


def cli_sample(file_result: Dict, n: int, folder: str, data_dir: Optional[str], seed: int,
               sidecar="rehash", timeout=600.0, env=None) -> List[Dict]:
    """Run a sample of the file's variants through ``python -m pipeline.evaluate``."""
    src = file_result["source"]
    if data_dir is None:
        labels = (src.sidecar or {}).get("labels") or ["_silence_"]
        data_dir = tiny_test_set(os.path.join(folder, "data_" + os.path.splitext(src.name)[0]),
                                 labels)
    out = []
    for r in pick_sample(file_result["records"], n):
        v = src.variant(seed, r["variant"]["index"])
        vpath = write_variant(src, v, folder, sidecar)
        cmd = [sys.executable, "-m", "pipeline.evaluate", "--model", vpath, "--data_dir",
               data_dir, "--split", "testing", "--plot", os.path.join(folder, "cli.png")]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                               env=env)
            rc, stderr = p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            rc = None
            stderr = e.stderr.decode("utf-8", "replace") if isinstance(e.stderr, bytes) else \
                (e.stderr or "")
        remove_variant(vpath)
        c = classify_cli(rc, stderr)
        c.update(variant=v.recipe(), describe=v.describe(), worker_class=r["class"],
                 returncode=rc)
        c["agrees"] = (c["class"], r["class"]) in {("ok", "ok"), ("refused", "refused")} or \
            c["class"] == r["class"]
        out.append(c)
    return out


# -- report ------------------------------------------------------------------------------------
def table(rows: List[Dict]) -> str:
    cols = ["variants", "ok", "changed", "refused"] + list(FAILURES)
    w = max([len(r["name"]) for r in rows] + [5]) + 2
    lines = ["file".ljust(w) + "".join(f"{c:>10}" for c in cols)]
    for r in rows:
        lines.append(r["name"].ljust(w) + "".join(f"{r['counts'].get(c, 0):>10}" for c in cols))
    return "\n".join(lines)


def _counts(records, classes=CLASSES):
    out = {c: 0 for c in classes}
    for r in records:
        out[r["class"]] = out.get(r["class"], 0) + 1
    return out


def failure_groups(records: List[Dict]) -> List[Dict]:
    """Failures grouped by class and message (numbers and paths masked), most frequent
    first: [{"class", "count", "kinds": {variant kind: n}, "first": record}]."""
    groups: Dict[tuple, Dict] = {}
    for r in records:
        if r["class"] not in FAILURES:
            continue
        detail = re.sub(r"\S*/\S*", "PATH", r.get("detail", ""))
        detail = re.sub(r"0x[0-9a-f]+|\d+", "#", detail)[:120]
        # a traceback is known by where it was raised, a crash by its Python frames
        where = (r.get("stderr") or [""])[-1] if r["class"] == "traceback" else ""
        g = groups.setdefault((r["class"], detail, where),
                              {"class": r["class"], "count": 0, "kinds": {}, "first": r})
        g["count"] += 1
        kind = r["variant"]["kind"]
        g["kinds"][kind] = g["kinds"].get(kind, 0) + 1
    return sorted(groups.values(), key=lambda g: -g["count"])


def examples(records: List[Dict], per_class: int, classes) -> List[str]:
    lines = []
    for cls in classes:
        hits = [r for r in records if r["class"] == cls]
        for r in hits[:per_class]:
            v = r["variant"]
            lines.append(f"[{cls}] {r['describe'][:300]}")
            if r.get("detail"):
                lines.append(f"    {r['detail'][:300]}")
            for l in r.get("stderr", [])[:8]:
                lines.append(f"    | {l[:200]}")
            lines.append(f"    reproduce: python -m pipeline.fuzz_models --models "
                         f"{os.path.relpath(v['source'], ROOT)} --seed {v['seed']} --only "
                         f"{v['index']} --out_dir build/fuzz_keep")
    return lines


def summarize(files: List[Dict], cli: List[Dict], seed: int, seconds: float,
              sanitize: bool) -> Dict:
    total = {c: 0 for c in CLASSES + ("changed",)}
    flavors: Dict[str, Dict] = {}
    for fr in files:
        fl = flavors.setdefault(fr["flavor"], {c: 0 for c in CLASSES + ("changed",)})
        for k, v in fr["counts"].items():
            total[k] += v
            fl[k] += v
    cli_counts = _counts(cli)
    failures = sum(total[c] for c in FAILURES) + sum(cli_counts[c] for c in FAILURES)
    by_kind: Dict[str, int] = {}
    for fr in files:
        for r in fr["records"]:
            if r["class"] in FAILURES:
                by_kind[r["variant"]["kind"]] = by_kind.get(r["variant"]["kind"], 0) + 1
    return {"seed": seed, "sanitize": sanitize, "seconds": round(seconds, 1),
            "failures_by_kind": by_kind,
            "variants": sum(sum(fr["counts"][c] for c in CLASSES) for fr in files),
            "files": {fr["name"]: fr["counts"] for fr in files}, "flavors": flavors,
            "total": total, "cli": cli_counts,
            "cli_disagreements": sum(1 for c in cli if not c["agrees"]),
            "failures": failures}


def run(paths: List[str], variants=300, seed=0, timeout=60.0, only=None, sanitize=False,
        op_lib=None, memory_gib=8.0, cli_per_flavor=5, data_dir=None, sidecar="rehash",
        keep_dir=None, worker_cmd=None, env=None, progress=True, out=sys.stdout):
    """Fuzz ``paths``; prints the report to ``out`` and returns the summary dict (plus
    ``files`` results under ``_files`` and the CLI sample under ``_cli``)."""
    t0 = time.monotonic()
    if sanitize:
        op_lib = op_lib or ASAN_OP_LIB
        if not os.path.exists(op_lib):
            raise HarnessError(f"{op_lib} does not exist: build the ASan/UBSan op library "
                               "with `make -C lce_kernels op-asan`")
        env = sanitizer_env(env)
        memory_gib = 0.0          # ASan reserves terabytes of address space
        cli_per_flavor = 0        # the CLI runs the regular library
    folder = tempfile.mkdtemp(prefix="fuzz_models_")
    try:
        worker = Worker(worker_cmd or worker_command(op_lib, memory_gib),
                        os.path.join(folder, "worker.stderr"), env=env)
        bar = Progress() if progress else None
        files, cli = [], []
        try:
            for p in paths:
                fr = fuzz_file(p, worker, seed, variants, folder, timeout, only, sidecar,
                               keep_dir, bar)
                files.append(fr)
        finally:
            worker.stop()
        t_cli = time.monotonic()
        sampled = set()
        for fr in files:
            if cli_per_flavor and fr["flavor"] not in sampled:
                sampled.add(fr["flavor"])
                cli += cli_sample(fr, cli_per_flavor, folder, data_dir, seed, sidecar)
        summary = summarize(files, cli, seed, time.monotonic() - t0, sanitize)
        summary["seconds_cli"] = round(time.monotonic() - t_cli, 1)
        summary["worker_starts"] = worker.starts
        summary["classifier"] = worker.ready.get("classifier")
        if sanitize:
            summary["op_libs"] = sorted(worker.op_libs)
        print_report(files, cli, summary, out)
        summary["_files"], summary["_cli"] = files, cli
        return summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_report(files, cli, summary, out, per_class=3):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"fuzz: {summary['variants']} variants of {len(files)} file(s), seed {summary['seed']}"
      + (", ASan/UBSan op library" if summary["sanitize"] else "")
      + f", {summary['seconds']:.0f} s, worker started {summary.get('worker_starts')} time(s); "
      f"user errors classified by {summary.get('classifier')}")
    p(table([{"name": fr["name"], "counts": {**fr["counts"], "variants": sum(
        fr["counts"][c] for c in CLASSES)}} for fr in files]))
    records = [r for fr in files for r in fr["records"]]
    groups = failure_groups(records)
    if groups:
        p(f"\nfailures: {len(groups)} distinct (class, message), most frequent first; the first "
          "variant of each:")
        for g in groups:
            p(f"{g['count']} x {g['class']}, variant kinds {g['kinds']}")
            for l in examples([g["first"]], 1, (g["class"],)):
                p("  " + l)
    lines = examples(records, per_class, ("refused",))
    if lines:
        p(f"\nrefused with a message (first {per_class}):")
        for l in lines:
            p(l)
    if cli:
        p(f"\nCLI sample (python -m pipeline.evaluate), {len(cli)} variants: " +
          ", ".join(f"{k} {v}" for k, v in summary["cli"].items() if v) +
          f"; {summary['cli_disagreements']} disagree with the worker")
        for c in cli:
            if c["class"] in FAILURES or not c["agrees"]:
                p(f"[cli {c['class']}, worker {c['worker_class']}] {c['describe'][:200]}")
                if c.get("detail"):
                    p(f"    {c['detail'][:300]}")
                for l in c.get("stderr", [])[:6]:
                    p(f"    | {l[:200]}")
    p("")
    p(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}))


# -- CLI ---------------------------------------------------------------------------------------
def define_flags():
    from absl import flags
    flags.DEFINE_string("exports_dir", DEFAULT_EXPORTS, "Folder of <flavor>_d<depth>.tflite "
                        "files (with their sidecar JSON).")
    flags.DEFINE_list("models", None, "Fuzz these .tflite files instead of discovering them.")
    flags.DEFINE_string("depths", "2", "Depths to fuzz per flavor ('all', or e.g. '8,2'); a "
                        "flavor without that depth is fuzzed at its smallest.")
    flags.DEFINE_list("flavors", None, "Only these flavors (e.g. bifsmnv2_bdfsmn).")
    flags.DEFINE_integer("variants", 300, "Variants per file.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the variants.")
    flags.DEFINE_list("only", None, "Only these variant indices (to reproduce one).")
    flags.DEFINE_float("timeout", 60.0, "Seconds per variant before it counts as a hang.",
                       lower_bound=1.0)
    flags.DEFINE_float("memory_gib", 8.0, "Address-space limit of the worker (0: none).")
    flags.DEFINE_bool("sanitize", False, "Run the ASan/UBSan op library over the files whose "
                      f"models hold {ops.BDFSMN} ops.")
    flags.DEFINE_string("op_lib", None, f"Op library for --sanitize (default {ASAN_OP_LIB}).")
    flags.DEFINE_integer("cli_sample", 5, "Variants per flavor also run through `python -m "
                         "pipeline.evaluate` (0: none).", lower_bound=0)
    flags.DEFINE_string("data_dir", None, "Speech Commands folder for the CLI sample (default: "
                        "a tiny generated test-set folder).")
    flags.DEFINE_enum("sidecar", "rehash", ["rehash", "copy"], "Sidecar JSON next to each "
                      "variant: the original's with its SHA-256 updated, or as is.")
    flags.DEFINE_string("out_dir", None, "Keep the non-ok variants (and their recipes) here.")
    from pipeline import cli_vocabulary
    cli_vocabulary.define_aliases("pipeline.fuzz_models")  # --keep_dir (old name of --out_dir)


def main(argv):
    """Harness errors go through pipeline.cli's one error path (one line, exit 2)."""
    from absl import app, flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    try:
        only = [int(i) for i in FLAGS.only] if FLAGS.only else None
    except ValueError:
        raise app.UsageError(f"--only takes variant indices, got {FLAGS.only}")
    if FLAGS.models:
        missing = [m for m in FLAGS.models if not os.path.isfile(m)]
        if missing:
            raise HarnessError(f"--models: no such file(s) {missing}; expected .tflite files")
        paths = FLAGS.models
    else:
        paths = discover(FLAGS.exports_dir, FLAGS.depths, FLAGS.flavors)
    if FLAGS.sanitize:
        paths = [p for p in paths if has_own_ops(p)]
        if not paths:
            raise HarnessError(f"--sanitize: none of the files holds the project's own ops {ops.OWN_OPS}")
    summary = run(paths, FLAGS.variants, FLAGS.seed, FLAGS.timeout, only, FLAGS.sanitize,
                  FLAGS.op_lib, FLAGS.memory_gib, FLAGS.cli_sample, FLAGS.data_dir,
                  FLAGS.sidecar, FLAGS.out_dir)
    from pipeline import cli
    cli.write_json_out({k: v for k, v in summary.items() if not k.startswith("_")})
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(HarnessError,))
