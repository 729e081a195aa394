"""One CLI vocabulary (issue 15, point 2): every ``python -m`` tool's flags are vocabulary flags
(pipeline/cli_vocabulary.py: --model, --models, --arch, --teacher, --data_dir, --out_dir,
--json_out), the shared data set flags, flags the tool declares as its own, or declared
deprecated aliases; its --help lists them and starts with what it reads and writes; the
README's tool table is the declared one; old spellings still work and warn once.

The flags are collected in ONE subprocess (``cli_vocabulary.defined_flags``: each tool's own
``define_flags()`` and the --help text absl prints for it), so the fast tests stay ~10 s;
``test_real_help_of_every_tool`` (slow) runs ``python -m TOOL --help`` for each.
"""
import ast
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
from absl import flags

from pipeline import cli_vocabulary as vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
FLAG_IN_HELP = re.compile(r"^  (?:-\S+?,)?--(?:\[no\])?([A-Za-z_]\w*):", re.M)  # "  --name: help"


def _python(code, timeout=180):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def defined():
    """What every tool really defines, and its --help text (one fresh process)."""
    proc = _python("import json; from pipeline import cli_vocabulary as v; "
                   "print(json.dumps(v.defined_flags()))")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main_modules():
    """Every module of the tool packages with an ``if __name__ == "__main__"`` block."""
    found = []
    for package in vocab.TOOL_PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(ROOT, package, name)) as f:
                tree = ast.parse(f.read())
            for node in tree.body:
                if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                    found.append(f"{package}.{name[:-3]}")
    return found


def test_every_tool_is_declared():
    mains = _main_modules()
    undeclared = [m for m in mains if m not in vocab.TOOLS and m not in vocab.INTERNAL]
    assert not undeclared, (f"python -m tools not declared in pipeline/cli_vocabulary.py TOOLS "
                            f"(or INTERNAL): {undeclared}")
    assert set(vocab.TOOLS) <= set(mains), set(vocab.TOOLS) - set(mains)


def test_vocabulary_is_consistent():
    """Aliases point at the vocabulary; no tool keeps a concept's name or an old spelling as a
    flag of its own."""
    old_names = {old for t in vocab.TOOLS.values() for old, _ in t.aliases}
    for t in vocab.TOOLS.values():
        assert set(t.concepts) <= set(vocab.CONCEPTS), t.module
        clash = set(t.specific) & (set(vocab.CONCEPTS) | set(vocab.COMMON_FLAGS)
                                   | (set(vocab.DATA_FLAGS) if t.data_flags else set()))
        assert not clash, (t.module, f"declares vocabulary flags as its own: {clash}")
        # an old spelling elsewhere is no tool-specific name (the same concept, two names)
        assert not set(t.specific) & old_names, (t.module, set(t.specific) & old_names)
        for old, new in t.aliases:
            assert new in t.concepts, (t.module, old, new)
            assert old not in t.concepts, (t.module, old)


def test_flags_are_vocabulary_or_declared(defined):
    assert defined["import_time"] == [], "tools must define their flags in define_flags()"
    for module, t in vocab.TOOLS.items():
        actual = defined[module]["flags"]
        outside = sorted(set(actual) - t.flags)
        assert not outside, (
            f"{module} defines {['--' + n for n in outside]}: neither a vocabulary flag "
            f"({', '.join(vocab.CONCEPTS)}), nor a data set flag, nor declared for this tool "
            "in pipeline/cli_vocabulary.py TOOLS (tool-specific or deprecated alias). A flag "
            "whose meaning is one of the concepts must use the concept's name.")
        stale = sorted(t.flags - set(actual))
        assert not stale, f"{module}: declared but not defined (stale declaration): {stale}"
        aliases = {n: target for n, target in actual.items() if target}
        assert aliases == dict(t.aliases), (module, aliases)


def test_help_lists_every_flag_and_starts_with_reads_writes(defined):
    for module, t in vocab.TOOLS.items():
        text = defined[module]["help"]
        doc, _, flag_part = text.partition("\n\nflags:\n\n")
        shown = set(FLAG_IN_HELP.findall(flag_part))
        own = {n for n, target in defined[module]["flags"].items() if not target}
        assert shown == own, (module, "in --help but not defined:", shown - own,
                              "defined but not in --help:", own - shown)
        for old, new in t.aliases:  # the new flag's help names its old spelling
            assert f"(Formerly --{old}, deprecated.)" in " ".join(flag_part.split()), old
        lines = doc.splitlines()
        assert lines[1] == "" and lines[2].startswith("Reads: "), (module, lines[:4])
        reads, writes = vocab.reads_writes(module)
        assert reads and writes


def test_readme_has_the_tool_table():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    table = vocab.markdown_table()
    assert table in readme, ("README.md's tool table differs from pipeline/cli_vocabulary.py; "
                             "paste the output of `python -c 'from pipeline import "
                             "cli_vocabulary as v; print(v.markdown_table())'`")
    for module in vocab.TOOLS:
        assert f"`{module}`" in table


def test_alias_sets_the_new_flag_and_warns_once(capsys, monkeypatch):
    monkeypatch.setattr(vocab, "_warned", set())
    fv = flags.FlagValues()
    flags.DEFINE_string("out_dir", None, "Output folder.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "b", flag_values=fv)
    flags.DEFINE_multi_string("models", ["default.tflite"], "m", flag_values=fv)
    vocab.define_alias("out", "out_dir", fv)
    vocab.define_alias("clobber", "overwrite", fv)
    vocab.define_alias("int8_model", "models", fv)
    vocab.define_alias("binary_model", "models", fv)
    fv(["tool", "--out", "a", "--out=b", "--clobber", "--int8_model=x.tflite",
        "--binary_model", "y.tflite"])
    assert fv.out_dir == "b" and fv.overwrite is True
    assert fv.models == ["x.tflite", "y.tflite"]       # both old names feed the new list
    err = capsys.readouterr().err.splitlines()
    assert sum("--out is deprecated; use --out_dir" in l for l in err) == 1, err
    assert any("--clobber is deprecated; use --overwrite" in l for l in err)
    assert len(err) == 4                                # one line per old name, once
    fv.unparse_flags()
    fv(["tool", "--out_dir", "c", "--noclobber"])
    assert fv.out_dir == "c" and fv.overwrite is False
    assert "(Formerly --out, deprecated.)" in fv["out_dir"].help


def test_old_run_flags_are_upgraded():
    stored = {"model": "bifsmnv2", "teacher_checkpoint": "/t", "epochs": 3}
    assert vocab.upgrade_run_flags(stored) == {"arch": "bifsmnv2", "teacher": "/t", "epochs": 3}
    assert vocab.upgrade_run_flags({"arch": "dfsmn", "model": "x"}) == {"arch": "dfsmn"}
    assert vocab.upgrade_run_flags(None) is None


def test_training_queue_and_flagfiles_still_parse():
    """configs/queue_real8.txt (old spellings: --teacher_checkpoint, --model=bifsmnv2_ste) and
    every configs/*.flags parse with pipeline.train's flags; the old names set --teacher and
    --arch and warn once each; the flagfiles use the new names (no warning)."""
    code = r"""
import glob, json, sys
from absl import flags
from pipeline import run_queue, train
train.define_flags()
F = flags.FLAGS
out = {"entries": {}, "flagfiles": {}}
entries = run_queue.parse_queue(open("configs/queue_real8.txt").read(), "R")
for e in entries:
    F.unparse_flags()
    F(["train", *e.args, "--out_dir=x"])
    out["entries"][e.name] = {"arch": F.arch, "teacher": F.teacher, "args": e.args}
for path in sorted(glob.glob("configs/*.flags")):
    F.unparse_flags()
    F(["train", "--flagfile=" + path])
    out["flagfiles"][path] = F.arch
print(json.dumps(out))
"""
    proc = _python(code)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["entries"]) >= 10
    for name, e in out["entries"].items():
        given = [a.split("=", 1)[1] for a in e["args"] if a.startswith("--teacher_checkpoint=")]
        assert e["teacher"] == (given[-1] if given else None), name
        model = [a.split("=", 1)[1] for a in e["args"] if a.startswith("--model=")]
        if model:
            assert e["arch"] == model[-1], name
        assert e["arch"] in ("dfsmn", "bifsmnv2", "bifsmnv2_ste"), name
    assert set(out["flagfiles"].values()) == {"dfsmn", "bifsmnv2", "dfsmn_stream",
                                              "bifsmnv2_stream"}
    warnings = [l for l in proc.stderr.splitlines() if "is deprecated" in l]
    assert sorted(l.split("--")[1].split()[0] for l in warnings) == ["model",
                                                                     "teacher_checkpoint"]
    assert all("use --arch" in l or "use --teacher" in l for l in warnings)


def test_old_meaning_of_model_in_export_and_summary():
    """``--model NAME`` was a registry name in pipeline.export (a check, with --checkpoint DIR)
    and models.summary; both are --arch now, and --model is the model they read. The old
    command lines still mean what they meant, with a deprecation line."""
    code = r"""
import json
from absl import flags
from pipeline import export
from models import summary
F = flags.FLAGS
before = set(F)
export.define_flags()
F(["export", "--checkpoint", "runs/x", "--model", "dfsmn"])
old = export.model_and_arch()
F.unparse_flags()
F(["export", "--model", "runs/x", "--arch", "dfsmn"])
new = export.model_and_arch()
for name in set(F) - before:
    delattr(F, name)
summary.define_flags()
F(["summary", "--model", "dfsmn", "--depth", "2"])
print(json.dumps({"old": old, "new": new, "summary": summary.arch_and_run_dir()}))
"""
    proc = _python(code)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["old"] == out["new"] == ["runs/x", "dfsmn"]
    assert out["summary"] == ["dfsmn", None]
    warnings = [l for l in proc.stderr.splitlines() if "deprecated" in l]
    assert any("--checkpoint is deprecated; use --model" in l for l in warnings), warnings
    assert any("--model is deprecated as a registry name here; use --arch" in l
               for l in warnings), warnings


def test_old_spelling_works_end_to_end_and_json_out(tmp_path):
    """``pipeline.download --archive A --out DIR``: unpacks, says once that --out is now
    --out_dir, and --json_out gets what was written; a --json_out that cannot be written
    stops the tool before the work, in one line (exit 2)."""
    src = tmp_path / "src" / "yes"
    src.mkdir(parents=True)
    (src / "a_nohash_0.wav").write_bytes(b"RIFF")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="yes")
    out, js = tmp_path / "data", tmp_path / "res" / "download.json"
    cmd = [sys.executable, "-m", "pipeline.download", "--archive", str(archive)]
    proc = subprocess.run(cmd + ["--out", str(out), "--json_out", str(js)], capture_output=True,
                          text=True, cwd=ROOT, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "yes" / "a_nohash_0.wav").exists()
    warnings = [l for l in proc.stderr.splitlines() if "deprecated" in l]
    assert warnings == ["pipeline.download: warning: --out is deprecated; use --out_dir (the "
                        "old name still works in this release)"]
    result = json.loads(js.read_text())
    assert result["folders"] == [str(out)] and result["source"] == "archive"
    bad = subprocess.run(cmd + ["--out_dir", str(tmp_path / "d2"), "--json_out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert f"--json_out {tmp_path} is a folder" in bad.stderr
    assert not (tmp_path / "d2").exists()                  # stopped before the work


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(vocab.TOOLS))
def test_real_help_of_every_tool(module):
    """``python -m TOOL --help`` as a user runs it (absl exits 1 after help): starts with the
    docstring (Reads / Writes), then lists exactly the tool's flags (its own, the vocabulary
    and data set flags it takes, --json_out, --debug), each old name in its new flag's help."""
    t = vocab.TOOLS[module]
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, cwd=ROOT, env=ENV, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[1] == "" and lines[2].startswith("Reads: "), lines[:4]
    flag_part = proc.stdout.split("\n\nflags:\n\n", 1)[1]
    shown = set(FLAG_IN_HELP.findall(flag_part))
    assert shown == t.flags - {old for old, _ in t.aliases}, (module, shown ^ t.flags)
    for old, _ in t.aliases:
        assert f"(Formerly --{old}, deprecated.)" in " ".join(flag_part.split()), old
