"""What a Linux board needs beside the library to run the model without edgeprune."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeprune.compile.source import Source
from edgeprune.targets import Target

RUNNER = Path(__file__).resolve().parent / "files" / "run_model.py"


def write_device_files(source: Source, target: Target, out_dir: Path, library: str) -> list[str]:
    """run_model.py, check.npz (a seeded input and the reference runtime's outputs) and README-device.md."""
    (out_dir / "run_model.py").write_bytes(RUNNER.read_bytes())
    feeds = source.random_feeds(seed=0)
    outputs = source.reference(feeds)
    arrays = {f"input:{k}": v for k, v in feeds.items()} | {f"output:{k}": v for k, v in outputs.items()}
    (out_dir / "check.npz").write_bytes(_deterministic_npz(arrays))
    names = ", ".join(i["name"] for i in source.inputs())
    install = target.device.get("python_runtime", "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 numpy")
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
""")
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
