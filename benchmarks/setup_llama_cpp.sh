#!/usr/bin/env bash
# llama.cpp for benchmarks/chat_peers.py, outside edgetune's venv, its lock and CI: llama-cpp-python's source
# distribution, built here (its CMake build compiles llama.cpp for this CPU: GGML_NATIVE; minutes on 2 cores)
# into a venv of its own, and the same source's convert_hf_to_gguf.py (with its gguf-py) to make GGUF files,
# run in that venv too (with torch 2.13.0's CPU build, transformers and sentencepiece, which it reads with).
#
# Usage: benchmarks/setup_llama_cpp.sh          -> prints the venv's python (chat_peers.py --llama-python)
# Into ${EDGETUNE_CACHE:-$HOME/.cache/edgetune}/llama-cpp/ (reused when it is there: delete it to rebuild,
# e.g. on another CPU). Needs cmake and a C++ compiler.
set -euo pipefail
VERSION=0.3.36
HERE=${EDGETUNE_CACHE:-${HOME:?set HOME or EDGETUNE_CACHE}/.cache/edgetune}/llama-cpp
PY=$HERE/venv/bin/python
CONVERTER_NEEDS=(torch==2.13.0 transformers sentencepiece protobuf)
if [[ -x $PY ]] && "$PY" -c "import llama_cpp" 2>/dev/null && [[ -f $HERE/src/vendor/llama.cpp/convert_hf_to_gguf.py ]]; then
    "$PY" -c "import torch, transformers, sentencepiece" 2>/dev/null || "$HERE/venv/bin/pip" install -q "${CONVERTER_NEEDS[@]}" >&2
    echo "$PY"
    exit 0
fi
command -v cmake >/dev/null || { echo "setup_llama_cpp.sh: cmake is needed (apt-get install cmake)" >&2; exit 2; }
rm -rf "$HERE"
mkdir -p "$HERE/sdist" "$HERE/src"
python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$HERE/sdist" >&2
tar -xzf "$HERE"/sdist/*.tar.gz -C "$HERE/src" --strip-components 1
python3 -m venv "$HERE/venv"
CMAKE_ARGS="-DGGML_NATIVE=ON ${CMAKE_ARGS:-}" "$HERE/venv/bin/pip" install -q "$HERE/src" >&2
"$HERE/venv/bin/pip" install -q "${CONVERTER_NEEDS[@]}" >&2
"$PY" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)" >&2
echo "$PY"
