"""The one command-line vocabulary of every ``python -m`` tool (issue 15, point 2).

One flag name per concept, in every tool:

    --model     the model a tool runs or reads: a .tflite file or a run directory (model.json
                + weights; a .weights.h5 in one also works where a Keras model is read)
    --models    several of them (comma list, or repeated where the tool says so)
    --arch      a model architecture: a registry name (models/registry.py)
    --teacher   the teacher's run directory
    --data_dir  a data set folder in the Speech Commands layout
    --out_dir   the folder a tool writes into
    --json_out  the tool's result, also written as JSON to this path

``pipeline.cli.run`` gives every tool ``--json_out`` and ``--debug``; tools that read clips take
the data set flags of ``pipeline.data_flags`` (``--data_dir`` plus ``DATA_FLAGS``). Anything
else a tool takes is tool-specific (``--depth``, ``--threads``, ``--split``...) and is declared
in ``TOOLS`` below, with the deprecated spellings it still accepts. ``tests/test_cli_vocabulary.py``
compares every tool's real flags (and its ``--help``) with these declarations, and the README's
tool table with ``markdown_table()``: a new flag must be declared here (and a flag whose
meaning is one of the concepts must use the concept's name).

Old spellings stay for one release as deprecated aliases, defined with absl's own
``flags.DEFINE_alias`` (``define_alias``): they set the new flag (whose help names the old
spelling) and print ONE line on stderr,

    pipeline.train: warning: --teacher_checkpoint is deprecated; use --teacher (...)

Run directories written before the rename keep their old keys in ``flags.json``;
``upgrade_run_flags`` maps them when a run is read (``pipeline.run_dirs``), so such runs still
resume. Each tool's module docstring starts with what it reads and what it writes
(``Reads:`` / ``Writes:`` lines, shown first by ``--help``; ``reads_writes`` parses them for the
README table).

A new tool: a module docstring starting with its summary line, ``Reads:`` and ``Writes:``; a
``define_flags()`` (flags are defined when the tool runs, never at import) that ends with
``cli_vocabulary.define_aliases(module)`` if it has old names; ``cli.run(main,
define=define_flags)``; ``main`` returns its result as a dict (``--json_out``); an entry in
``TOOLS``; and the README table regenerated (``print(markdown_table())``).
"""
from __future__ import annotations

import ast
import dataclasses
import os
import sys
from typing import Dict, Optional, Tuple

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the concepts: flag name -> meaning (one line each)
CONCEPTS: Dict[str, str] = {
    "model": "the model a tool runs or reads: a .tflite file or a run directory (model.json + "
             "weights)",
    "models": "several models (the plural of --model): .tflite files, comma separated",
    "arch": "a model architecture: a registry name (models/registry.py: dfsmn, bifsmnv2, ...)",
    "teacher": "the teacher's run directory",
    "data_dir": "a data set folder in the Speech Commands layout",
    "out_dir": "the folder the tool writes into",
    "json_out": "also write the tool's result as JSON to this path",
}

#: flags pipeline.cli.run gives every tool
COMMON_FLAGS: Dict[str, str] = {
    "json_out": CONCEPTS["json_out"],
    "debug": "show the full traceback of an error (also BKWS_DEBUG=1)",
}

#: the data set flags of pipeline.data_flags besides --data_dir (task, words, split rule,
#: augmentation): shared by every tool that reads clips
DATA_FLAGS: Tuple[str, ...] = (
    "task", "wanted_words", "protocol", "silence_percentage", "unknown_percentage",
    "validation_percentage", "testing_percentage", "split_salt", "seed", "cache_dir",
    "background_frequency", "background_volume", "time_shift_ms", "speed_change", "gain_db",
    "spec_augment", "history_clips", "history_prob", "history_tail_ms")


@dataclasses.dataclass(frozen=True)
class Tool:
    """One ``python -m`` tool: the vocabulary flags it takes, its own flags, its old names."""

    module: str
    concepts: Tuple[str, ...]            # vocabulary flags (besides json_out / debug)
    specific: Tuple[str, ...] = ()       # tool-specific flags
    data_flags: bool = False             # takes pipeline.data_flags (--data_dir + DATA_FLAGS)
    aliases: Tuple[Tuple[str, str], ...] = ()  # (old, new): deprecated, work for one release

    @property
    def flags(self) -> set:
        """Every flag name the tool may define (aliases included, absl's own excluded)."""
        names = set(self.concepts) | set(self.specific) | set(COMMON_FLAGS)
        names |= {old for old, _ in self.aliases}
        if self.data_flags:
            names |= {"data_dir", *DATA_FLAGS}
        return names


_MODEL_SIZE = ("channels", "hidden", "num_layers")
_STREAM = (
    "depth", "wav", "truth", "split", "minutes", "keywords_per_minute", "snr_db",
    "equal_loudness", "min_gap_s", "stride_ms", "average_window_ms", "threshold",
    "suppression_ms", "minimum_count", "sweep", "outputs", "tolerance_before", "tolerance_after",
    "batch_windows", "plot", "plot_seconds", "plot_start", "instructions_per_inference",
    "cost_json", "cost_key", "clock_mhz", "ipc", "progress", "loop")

#: every user-facing tool, in the order of the README table
TOOLS: Dict[str, Tool] = {t.module: t for t in (
    Tool("pipeline.demo", ("data_dir", "out_dir"), ("stream_minutes", "bench_runs", "reuse_runs")),
    Tool("pipeline.synth", ("out_dir",),
         ("words", "speakers", "seed", "noise_seconds", "jobs", "max_repetitions", "overwrite"),
         aliases=(("out", "out_dir"),)),
    Tool("pipeline.download", ("out_dir",),
         ("version", "source", "archive", "base_url", "test_set"),
         aliases=(("out", "out_dir"),)),
    Tool("pipeline.inspect_data", ("data_dir",), data_flags=True),
    Tool("pipeline.bench_input", ("data_dir",), ("batch_size", "epochs"), data_flags=True),
    Tool("pipeline.train", ("arch", "teacher", "data_dir", "out_dir"),
         _MODEL_SIZE + ("left", "right", "dilation", "dropout", "epochs", "steps_per_epoch",
                        "batch_size", "lr", "weight_decay", "optimizer", "lr_schedule",
                        "quant_lr_multiplier", "label_smoothing", "clip_norm",
                        "init_from", "init_from_teacher", "distill", "distill_alpha",
                        "logit_loss", "kd_temperature", "kd_weight", "ce_weight",
                        "select_pass", "J", "thin_n", "resume", "overwrite", "eval_batch_size",
                        "strategy"),
         data_flags=True,
         aliases=(("model", "arch"), ("teacher_checkpoint", "teacher"))),
    Tool("pipeline.run_queue", ("out_dir",),
         ("queue", "logs_dir", "only", "dry_run", "report", "python", "archive_dir",
          "check_flags"),
         aliases=(("runs_dir", "out_dir"),)),
    Tool("pipeline.evaluate", ("model", "data_dir"),
         ("split", "depth", "plot", "batch_size", "reference"), data_flags=True),
    Tool("pipeline.export", ("model", "teacher", "arch", "data_dir", "out_dir"),
         ("depth", "flavor", "audio_input", "streaming", "hop_frames", "force", "verify_clips",
          "test_accuracy", "representative_clips", "min_agreement") + _MODEL_SIZE,
         data_flags=True, aliases=(("checkpoint", "model"),)),
    Tool("pipeline.tflite_metadata", ("models",), ("stamp",)),
    Tool("pipeline.benchmark", ("models", "teacher", "out_dir"),
         ("threads", "runs", "warmup", "burst", "seed", "backbone", "bdfsmn_paths",
          "project_ops"),
         aliases=(("backbone_teacher", "teacher"), ("backbone_dir", "out_dir"))),
    Tool("pipeline.device_profile", ("models", "out_dir"),
         ("adb", "ssh", "benchmark_binary", "threads", "remote_dir", "extra_args", "parse")),
    Tool("pipeline.fuzz_models", ("models", "data_dir", "out_dir"),
         ("exports_dir", "depths", "flavors", "variants", "seed", "only", "timeout",
          "memory_gib", "sanitize", "op_lib", "cli_sample", "sidecar"),
         aliases=(("keep_dir", "out_dir"),)),
    Tool("pipeline.kernel_ref", ("out_dir",), ("cases", "seed"),
         aliases=(("out", "out_dir"),)),
    Tool("models.summary", ("arch", "model"), ("depth", "num_classes", "larq")),
    Tool("models.lce_census", ("model",)),
    Tool("firmware_sim.cost", ("models", "out_dir"),
         ("T", "C", "H", "left", "right", "layers", "classes", "runs", "seed", "uarch", "hops"),
         aliases=(("work_dir", "out_dir"),)),
    Tool("firmware_sim.micro", ("models", "data_dir"), ("split", "max_clips", "arena_size"),
         data_flags=True, aliases=(("int8_model", "models"), ("binary_model", "models"))),
    Tool("firmware_sim.stream", ("model", "data_dir", "out_dir"), _STREAM, data_flags=True),
    Tool("firmware_sim.stream_report", (), ("streams", "baseline")),
    Tool("firmware_sim.run", ("model", "data_dir"),
         ("split", "plot", "batch_size", "reference", "target", "float_kernels", "kernel_path",
          "arena_size"), data_flags=True),
)}

#: modules run as ``python -m`` that are not user tools (no vocabulary check), and why
INTERNAL: Dict[str, str] = {
    "pipeline.fuzz_worker": "the fuzz harness's worker process (a JSON-lines protocol on "
                            "stdin/stdout, started by pipeline.fuzz_models)",
}

#: folders whose modules are tools (tests/test_cli_vocabulary.py finds every __main__ in them)
TOOL_PACKAGES = ("pipeline", "models", "firmware_sim")


# -- deprecated aliases ------------------------------------------------------------------------
_warned: set = set()


def warn(message: str) -> None:
    """``<tool>: warning: <message>`` on stderr, once per message and process."""
    if message in _warned:
        return
    _warned.add(message)
    from pipeline.cli import tool_name
    sys.stderr.write(f"{tool_name()}: warning: {message}\n")
    sys.stderr.flush()


def warn_deprecated(old: str, new: str, detail: str = "") -> None:
    """One line on stderr, once per old name and process: ``--old`` is deprecated, use
    ``--new``. ``detail`` says more when the old name meant something else (e.g. ``--model``
    as a registry name)."""
    warn(f"--{old} is deprecated{detail}; use --{new} (the old name still works in this "
         "release)")


def define_alias(old: str, new: str, flag_values: Optional[flags.FlagValues] = None):
    """``--old`` as a deprecated alias of the already defined ``--new``: absl's
    ``flags.DEFINE_alias`` (the alias sets ``--new``, in command-line order, also from a
    ``--flagfile``; ``--noold`` for booleans), plus one warning line the first time it is
    used. The alias is filed under this module, not under the tool: code that serialises a
    tool's own (key) flags, e.g. pipeline.train's flags.json, never sees it; the tool's
    ``--help`` names it in the help of ``--new`` and ``--helpfull`` lists it."""
    fv = flags.FLAGS if flag_values is None else flag_values
    holder = flags.DEFINE_alias(old, new, flag_values=fv, module_name=__name__)
    alias = fv[old]
    parse = alias.parse

    def parse_and_warn(argument):
        warn_deprecated(old, new)
        parse(argument)
        alias.given.append(argument)

    alias.parse = parse_and_warn
    alias.given = []  # the raw values given through the old name (pipeline.export needs them)
    alias.help = f"Deprecated: use --{new} (this old name works for one release, with a warning)."
    alias.deprecated_alias_of = new
    fv[new].help = f"{fv[new].help} (Formerly --{old}, deprecated.)"
    return holder


def define_aliases(module: str, flag_values: Optional[flags.FlagValues] = None) -> None:
    """Every deprecated alias ``TOOLS[module]`` declares (call after the tool's DEFINEs)."""
    for old, new in TOOLS[module].aliases:
        define_alias(old, new, flag_values)


def is_alias(flag) -> bool:
    """True for a flag made by ``define_alias`` (e.g. to leave it out of a run's flags.json)."""
    return getattr(flag, "deprecated_alias_of", None) is not None


def upgrade_run_flags(stored: Optional[dict]) -> Optional[dict]:
    """A run's flags.json as the current pipeline.train names it: the keys of runs made before
    the rename (``model``, ``teacher_checkpoint``) become ``arch``, ``teacher`` (a key already
    under the new name wins)."""
    if stored is None:
        return None
    out = dict(stored)
    for old, new in TOOLS["pipeline.train"].aliases:
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


# -- what each tool reads and writes (its docstring) -------------------------------------------
def module_path(module: str) -> str:
    return os.path.join(ROOT, *module.split(".")) + ".py"


def reads_writes(module: str) -> Tuple[str, str]:
    """The ``Reads:`` and ``Writes:`` paragraphs at the top of a tool's docstring (read with
    ``ast``, without importing the tool). ValueError if either is missing."""
    with open(module_path(module)) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    found: Dict[str, list] = {}
    key = None
    for line in doc.splitlines()[:20]:
        stripped = line.strip()
        head = stripped.split(":", 1)[0]
        if head in ("Reads", "Writes") and not line.startswith(" "):
            key = head
            found[key] = [stripped.split(":", 1)[1].strip()]
        elif key and stripped and line.startswith(" "):
            found[key].append(stripped)
        else:
            key = None
    missing = [k for k in ("Reads", "Writes") if k not in found]
    if missing:
        raise ValueError(f"{module}: its docstring has no {' / '.join(missing)} line in its "
                         "first 20 lines")
    return " ".join(found["Reads"]), " ".join(found["Writes"])


def _flag_list(names) -> str:
    return " ".join(f"`--{n}`" for n in names)


def _md(text: str) -> str:
    """Docstring text for a Markdown cell: flags, paths and file names (what holds ``--``,
    ``_``, ``<`` or ``*``) in backticks, so that nothing renders as emphasis or HTML."""
    words = []
    for word in text.split():
        core = word.strip("(),;:.")
        if core and any(c in core for c in "_<*") or core.startswith("--"):
            i = word.index(core)
            word = f"{word[:i]}`{core}`{word[i + len(core):]}"
        words.append(word)
    return " ".join(words)


def markdown_table() -> str:
    """The README's tool table: every tool, what it reads and writes, and its flags (besides
    --json_out and --debug, which every tool has)."""
    rows = ["| tool | reads | writes | vocabulary flags | its own flags | old names (deprecated) |",
            "|---|---|---|---|---|---|"]
    for t in TOOLS.values():
        reads, writes = reads_writes(t.module)
        vocab = _flag_list(c for c in CONCEPTS if c in t.concepts)
        if t.data_flags:
            vocab += " + data set flags"
        old = ", ".join(f"`--{o}` → `--{n}`" for o, n in t.aliases)
        rows.append(f"| `{t.module}` | {_md(reads)} | {_md(writes)} | {vocab or '-'} | "
                    f"{_flag_list(t.specific) or '-'} | {old or '-'} |")
    return "\n".join(rows)


# -- for tests/test_cli_vocabulary.py: the flags the tools really define -----------------------
def defined_flags(modules=None) -> dict:
    """``{module: {"flags": {name: alias target or None}, "help": --help text}}`` for every
    tool, from its own ``define_flags()`` (what ``cli.run`` calls), one tool after the other;
    each tool's flags are deleted before the next. Run in a fresh process (it redefines
    flags such as --model that a test may already hold). ``"import_time"``: project modules
    that define flags when merely imported (a tool must define them in ``define_flags``)."""
    import importlib

    from pipeline import cli
    fv = flags.FLAGS
    project = tuple(p + "." for p in TOOL_PACKAGES)
    mods = {m: importlib.import_module(m) for m in (modules or TOOLS)}
    out = {"import_time": sorted(m for m, fl in fv.flags_by_module_dict().items()
                                 if fl and m.startswith(project))}
    for name, mod in mods.items():
        before = set(fv)
        mod.define_flags()
        cli.define_common_flags()
        cli.adopt_shared_key_flags(name)
        new = sorted(set(fv) - before)
        help_text = (mod.__doc__ or "") + "\n\nflags:\n\n" + fv.module_help(name)
        out[name] = {"flags": {n: getattr(fv[n], "deprecated_alias_of", None) for n in new},
                     "help": help_text}
        for n in new:
            delattr(fv, n)
    return out
