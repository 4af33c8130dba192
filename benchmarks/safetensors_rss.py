"""Peak resident memory of reading every tensor of a large safetensors file one at a time, by reader.

Writes a 1280 MiB float32 file (20 tensors of 64 MiB) with `write_safetensors` unless it exists, then reads it in
one child process per reader and prints each child's peak `ru_maxrss` and wall time. The figures are quoted in
`xlm_flax/checkpoints/safetensors_io.py`, which explains why the package reads with its own `SafetensorsReader`.

    PYTHONPATH=. python benchmarks/safetensors_rss.py [PATH]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

N, ROWS, COLS = 20, 4096, 4096

READERS = {
    "SafetensorsReader.read (readinto)": """
from xlm_flax.checkpoints.safetensors_io import SafetensorsReader
r = SafetensorsReader(PATH)
for n in r.keys():
    a = r.read(n); del a
""",
    "SafetensorsReader.read_slice, whole tensor": """
from xlm_flax.checkpoints.safetensors_io import SafetensorsReader
r = SafetensorsReader(PATH)
for n in r.keys():
    a = r.read_slice(n, (slice(None), slice(None))); del a
""",
    "SafetensorsReader.read_slice, 1/8 of the columns": """
from xlm_flax.checkpoints.safetensors_io import SafetensorsReader
r = SafetensorsReader(PATH)
for n in r.keys():
    a = r.read_slice(n, (slice(None), slice(0, COLS // 8))); del a
""",
    "safe_open get_tensor, held open": """
from safetensors import safe_open
with safe_open(PATH, framework="numpy") as f:
    for n in f.keys():
        a = f.get_tensor(n); del a
""",
    "safe_open get_tensor, reopened per tensor": """
from safetensors import safe_open
with safe_open(PATH, framework="numpy") as f:
    names = list(f.keys())
for n in names:
    with safe_open(PATH, framework="numpy") as f:
        a = f.get_tensor(n)
    del a
""",
    "safe_open get_slice 1/8 of the rows, held open": """
from safetensors import safe_open
with safe_open(PATH, framework="numpy") as f:
    for n in f.keys():
        a = f.get_slice(n)[: ROWS // 8]; del a
""",
}


def main(path: str) -> None:
    from xlm_flax.checkpoints.safetensors_io import write_safetensors

    if not os.path.exists(path):
        specs = [(f"t{i}", (ROWS, COLS), np.dtype(np.float32)) for i in range(N)]
        write_safetensors(path, specs, lambda name: np.full((ROWS, COLS), int(name[1:]), np.float32))
    print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB, largest tensor {ROWS * COLS * 4 / 2**20:.0f} MiB")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    prelude = f"PATH, ROWS, COLS = {path!r}, {ROWS}, {COLS}\nimport resource\n"
    report = "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"  # KiB on Linux
    base = prelude + "import numpy, safetensors" + report
    out = subprocess.run([sys.executable, "-c", base], capture_output=True, text=True, check=True, env=env)
    print(f"{'python + numpy + safetensors':50s} peak RSS {int(out.stdout) / 1024:6.0f} MiB")
    for label, body in READERS.items():
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", prelude + body + report], capture_output=True, text=True, check=True, env=env
        )
        seconds = time.perf_counter() - start
        print(f"{label:50s} peak RSS {int(out.stdout.split()[-1]) / 1024:6.0f} MiB  {seconds:5.1f} s")
    reopen_cost(path + ".many")


def reopen_cost(path: str, n: int = 1000) -> None:
    """What reopening `safe_open` for every tensor costs on a file of many tensors: a header parse per read."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    save_file({f"transformer.attentions.{i}.q_lin.weight": np.zeros((16, 16), np.float32) for i in range(n)}, path)
    with safe_open(path, framework="numpy") as f:
        names = list(f.keys())
    start = time.perf_counter()
    with safe_open(path, framework="numpy") as f:
        for name in names:
            f.get_tensor(name)
    held = time.perf_counter() - start
    start = time.perf_counter()
    for name in names:
        with safe_open(path, framework="numpy") as f:
            f.get_tensor(name)
    reopened = time.perf_counter() - start
    header = os.path.getsize(path) - n * 16 * 16 * 4
    print(
        f"{n} tensors ({header / 1024:.0f} KiB header): held open {held * 1e3:.0f} ms, reopened {reopened * 1e3:.0f} ms"
    )
    os.remove(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "xlm_flax_rss.safetensors"))
