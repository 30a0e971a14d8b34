"""The embedded models by name, without torch: their converted folder, or None."""

import subprocess
import sys

from core.model.embedded import EMBEDDED_MODELS, EMBEDDED_NAME, MANIFEST, embedded_folder


def test_the_default_base_is_found_once_converted(embedded_dir):
    assert embedded_folder("embedded") == embedded_dir and (embedded_dir / MANIFEST).exists()
    assert embedded_dir.name == EMBEDDED_NAME == EMBEDDED_MODELS["embedded"].folder


def test_unknown_or_unconverted_names_are_none(monkeypatch, tmp_path):
    assert embedded_folder("no-such-model") is None
    monkeypatch.setenv("DISTILL_SLM_MODELS_DIR", str(tmp_path))
    assert embedded_folder("gemma3-270m") is None  # known, not converted there


def test_it_does_not_import_torch():
    code = "import sys, core.model.embedded; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
