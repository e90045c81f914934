"""The peers retain is measured against, in a virtual environment of their own (never retain's
dependencies): lm-evaluation-harness and mergekit, at pinned versions, on the same CPU torch.

    python benchmarks/peers.py [DIR]      (default .bench/peers; prints the venv's python)

A stamp file records what was installed; a second call with the same pins installs nothing.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".bench" / "peers"
TORCH = "torch==2.13.0"  # first, so that nothing pulls a CUDA build
PEERS = ("lm_eval==0.4.13", "mergekit==0.1.5")


def ensure(folder: Path = DEFAULT_DIR, *, quiet: bool = True) -> Path:
    """The peers' python, installing the venv first when it is missing or out of date."""
    python = folder / "bin" / "python"
    stamp = folder / ".peers-installed"
    want = "\n".join((TORCH, *PEERS))
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(folder)
    q = ["-q"] if quiet else []
    for group in ([TORCH], list(PEERS)):
        subprocess.run([str(python), "-m", "pip", "install", *q, *group], check=True)
    stamp.write_text(want)
    return python


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR, quiet=False))
