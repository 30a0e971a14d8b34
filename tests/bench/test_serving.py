"""bench serving's survey of other engines on this machine: what it says is what Python can import."""

import importlib.util

from bench.serving import other_engines


def test_other_engines_are_named_installed_exactly_when_importable():
    found = other_engines()
    assert found == {
        name: "installed" if importlib.util.find_spec(module) else "not installed"
        for name, module in (("vllm", "vllm"), ("llama.cpp", "llama_cpp"))
    }
