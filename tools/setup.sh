#!/usr/bin/env bash
# Set up edgeprune on a fresh Debian 12 machine: the Debian packages in tools/apt-packages.txt,
# a virtual environment in .venv, and edgeprune installed into it (editable) with its extras.
#   bash tools/setup.sh          runtime + RPC extras
#   bash tools/setup.sh --dev    also the test tools, the train extra (torch pinned: a local CPU wheel) and the real models
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="rpc,tflite,images,tune,serial"
[[ "${1:-}" == "--dev" ]] && EXTRAS="rpc,tflite,images,tune,serial,train,models,dev"

SUDO=""
[[ "$(id -u)" != 0 ]] && SUDO="sudo"
mapfile -t PKGS < <(sed -e 's/#.*//' -e '/^\s*$/d' tools/apt-packages.txt)
python3 -c "import ensurepip" 2>/dev/null || PKGS+=(python3-venv)
MISSING=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || MISSING+=("$p"); done
if (( ${#MISSING[@]} )); then
  echo "setup: installing Debian packages: ${MISSING[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${MISSING[@]}"
fi

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert (3, 10) <= sys.version_info[:2] < (3, 13), sys.version' \
  || { echo "setup: edgeprune needs Python 3.10-3.12 (set PYTHON=...)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
# The real-model test tier's PP-OCRv4 detector: only the wheel's .onnx files, not its opencv stack.
[[ "${1:-}" == "--dev" ]] && .venv/bin/python -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
echo "setup: ready ($(.venv/bin/edgeprune --version))"
