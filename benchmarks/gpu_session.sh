#!/usr/bin/env bash
# Everything a lent GPU is for, as one command within one lease (docs/benchmarks.md, "GPU"): the machine, the
# tests that need CUDA, a short `tks train` on CUDA, then benchmarks/gpu.py. Each part's output is also written
# under $OUT (default gpu-out/). Optional wheels in .whl/ (SpikingJelly and loguru, which a GPU image may lack)
# are installed to /tmp/site first. Usage: BUDGET_S=270 bash benchmarks/gpu_session.sh
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    lscpu | grep 'Model name'
} 2>&1 | tee "$out/machine.txt"
timeout 180 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_triton_lif.py tests/test_neuron.py \
    tests/test_models.py > "$out/pytest.txt" 2>&1; tail -n 3 "$out/pytest.txt"
timeout 120 python3 -m tks train --set run.device=cuda --set optim.epochs=3 --set run.name=gpu-check 2>&1 \
    | tail -n 12 | tee "$out/train.txt"
python3 benchmarks/gpu.py --budget-s "${BUDGET_S:-270}" 2>&1 | grep -v "^[WI][0-9]" | tee "$out/gpu.md"
