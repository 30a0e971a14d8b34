"""The embedded models by name, without torch: their converted folder, or None."""

import subprocess
import sys

from core.model.embedded import EMBEDDED_MODELS, EMBEDDED_NAME, MANIFEST, embedded_folder
from core.settings import ModelSettings


def test_the_default_base_is_found_once_converted(embedded_dir):
    assert embedded_folder("embedded", ModelSettings().models_dir) == embedded_dir and (embedded_dir / MANIFEST).exists()
    assert embedded_dir.name == EMBEDDED_NAME == EMBEDDED_MODELS["embedded"].folder


def test_unknown_or_unconverted_names_are_none(tmp_path):
    assert embedded_folder("no-such-model", ModelSettings().models_dir) is None
    assert embedded_folder("gemma3-270m", tmp_path) is None  # known, not converted there


def test_it_does_not_import_torch():
    code = "import sys, core.model.embedded; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
