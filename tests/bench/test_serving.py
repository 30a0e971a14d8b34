"""bench serving's survey of other engines on this machine: vLLM is the `vllm` command it finds (the settings', else
`make test-vllm`'s), llama.cpp what Python can import."""

import importlib.util
import os
from pathlib import Path

from bench.serving import other_engines, vllm_executable
from core.settings import ServiceSettings


def test_other_engines_name_the_vllm_command_found_and_llama_cpp_when_importable(tmp_path: Path):
    fake = tmp_path / "vllm"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert vllm_executable(ServiceSettings(vllm_executable=fake)) == fake
    missing = ServiceSettings(vllm_executable=tmp_path / "absent")
    found = other_engines(missing)
    if os.access(".venv-vllm/bin/vllm", os.X_OK):  # make test-vllm's build is the fallback
        assert Path(found["vllm"]).resolve() == Path(".venv-vllm/bin/vllm").resolve()
    else:
        assert found["vllm"] == "not installed"
    assert found["llama.cpp"].startswith("installed") == bool(importlib.util.find_spec("llama_cpp"))
