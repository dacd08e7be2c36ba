"""What a Linux board needs beside the library to run the model without edgeprune."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeprune.compile.source import Source
from edgeprune.targets import Target

RUNNER = Path(__file__).resolve().parent / "files" / "run_model.py"

# Boards PyPI has no TVM runtime wheel for, by the first part of the target triple: how to build it there.
RUNTIME_FROM_SOURCE = {
    "armv7l": """
## Building TVM's runtime on a 32-bit (armv7l) Raspberry Pi OS

PyPI has no armv7 wheel of `apache-tvm` or `apache-tvm-ffi`: build both on the board (about 30-60 minutes
on a Pi 4, 1 GB of disk; a Pi with 1 GB of RAM needs `-j1`). Only the runtime is built: the bundle's
library was compiled already, so LLVM and the compiler are not needed.

```
sudo apt-get install -y git cmake ninja-build g++ python3-dev python3-venv python3-numpy
python3 -m venv --system-site-packages ~/tvm-env && . ~/tvm-env/bin/activate
pip install cython scikit-build-core setuptools-scm
# tvm-ffi from its source distribution (C++ core + Cython extension), the version the bundle was built with
pip install --no-build-isolation --no-binary apache-tvm-ffi apache-tvm-ffi==0.1.14.post0
# TVM's runtime library, without LLVM
git clone --recursive --depth 1 --branch v0.27.0 https://github.com/apache/tvm ~/tvm
cmake -S ~/tvm -B ~/tvm/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DUSE_LLVM=OFF -DUSE_LIBBACKTRACE=OFF
cmake --build ~/tvm/build --target tvm_runtime -j2
# the Python side, loading only the runtime library
export PYTHONPATH=~/tvm/python TVM_LIBRARY_PATH=~/tvm/build TVM_USE_RUNTIME_LIB=1
python3 -c "import tvm; print(tvm.runtime.enabled('cpu'))"   # True
```

Keep the three `export`s (e.g. in `~/.profile`); then step 3 below runs as it is, and
`python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090` serves `edgeprune profile --rpc`
(the RPC server also needs `pip install cloudpickle psutil`).
""",
}


def write_device_files(source: Source, target: Target, out_dir: Path, library: str) -> list[str]:
    """run_model.py, check.npz (a seeded input and the reference runtime's outputs) and README-device.md."""
    (out_dir / "run_model.py").write_bytes(RUNNER.read_bytes())
    feeds = source.random_feeds(seed=0)
    outputs = source.reference(feeds)
    arrays = {f"input:{k}": v for k, v in feeds.items()} | {f"output:{k}": v for k, v in outputs.items()}
    (out_dir / "check.npz").write_bytes(_deterministic_npz(arrays))
    names = ", ".join(i["name"] for i in source.inputs())
    install = target.device.get("python_runtime", "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 numpy")
    from_source = RUNTIME_FROM_SOURCE.get(target.tvm.get("mtriple", "").split("-")[0], "")
    (out_dir / "README-device.md").write_text(f"""# Running this bundle on {target.name}

{target.description}

1. Copy this folder to the board.
2. Install TVM's runtime and numpy there: `{install}`.
3. Run `python3 run_model.py`. It loads `{library}`, runs it on the input stored in `check.npz`
   and compares with {source.reference_name}'s outputs computed when the bundle was built; expect, per output,
   a line ending in `OK`, then the median latency. `python3 run_model.py --input NAME=FILE.npy`
   runs your own input (inputs: {names}).

For repeatable measurements and per-kernel times from a development machine instead, start TVM's
RPC server on the board (`python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090`) and run
`edgeprune profile BUNDLE --rpc BOARD:9090` there.
{from_source}""")
    return ["run_model.py", "check.npz", "README-device.md"]


def _deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez stamps zip entries with the current time; fixed stamps keep bundles byte-identical."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, entry.getvalue())
    return buffer.getvalue()
