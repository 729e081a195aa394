"""The README's "Python API" section runs as written.

The one ```python block of that section is cut out of README.md and run as a script in an empty
folder, in a fresh interpreter (as a user pastes it into a notebook or a file): it synthesises
its own tiny corpus with espeak-ng, builds a model from the registry, trains a few steps,
exports a .tflite and runs it on a clip. The test fails when the block raises, when a file it
promises is missing, or when its last line is not a prediction of one of the model's classes.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
HEADING = "## Python API"


def api_blocks(text):
    """The ```python blocks of the README section titled ``HEADING``."""
    if HEADING not in text:
        return []
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)


def test_readme_has_one_api_block():
    with open(README) as f:
        blocks = api_blocks(f.read())
    assert len(blocks) == 1, f"expected one ```python block under '{HEADING}' in README.md"
    code = blocks[0]
    compile(code, "README.md (Python API)", "exec")  # at least valid Python
    for step in ("models.get_model", "Trainer(", ".fit()", "export.run(", "load_predictor("):
        assert step in code, f"the README's Python API block no longer shows {step}"


def test_api_blocks_extraction():
    text = ("# x\n\n## Python API\n\nsome text\n\n```python\nprint(1)\n```\n\n```bash\nls\n```"
            "\n\n## Next\n\n```python\nprint(2)\n```\n")
    assert api_blocks(text) == ["print(1)\n"]
    assert api_blocks("# no such section\n") == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="the block synthesises its corpus with espeak-ng and sox "
                           "(make setup installs them)")
def test_readme_python_api_runs(tmp_path):
    with open(README) as f:
        [code] = api_blocks(f.read())
    script = tmp_path / "readme_api.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # what the block says it makes
    for path in ("corpus/synth_manifest.json", "run/model.json", "run/best.weights.h5",
                 "exports/bifsmnv2_lce_d4.tflite", "exports/exports.json"):
        assert (tmp_path / path).exists(), f"the README's block did not write {path}"
    with open(tmp_path / "run" / "model.json") as f:
        labels = json.load(f)["labels"]
    last = proc.stdout.strip().splitlines()[-1]
    clip, _, predicted = last.partition(" -> ")
    assert clip.endswith(".wav") and (tmp_path / "corpus" / clip).exists(), last
    assert predicted in labels, last
