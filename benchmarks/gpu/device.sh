#!/usr/bin/env bash
# Tandem on the GPU machine (one H100/H200, torch 2.11 + CUDA 13, no package index): vLLM 0.26.0, Ray and
# the other wheels travel as parts of a bundle (docs/gpu.md, "Bringing vLLM there"), then the real stack runs.
#   bash benchmarks/gpu/device.sh add            append the part(s) in .gpu/now/ (one per call, machine warm)
#   bash benchmarks/gpu/device.sh install        install the bundle, check imports, make the 8B-shaped model
#   bash benchmarks/gpu/device.sh stack-tests    the stack tests on the one-GPU plan with the 8B-shaped model (TEST_PLAN= : the shipped one-GPU plan)
#   bash benchmarks/gpu/device.sh up             start that stack in the background (setsid) and wait for it
#   bash benchmarks/gpu/device.sh engine NAME    the OpenAI base URL of replica NAME's vLLM server (after `up`)
#   bash benchmarks/gpu/device.sh run CMD...     run CMD with the environment set (after `up`)
# Every command writes what it shows under $OUT (the device tool brings that folder back).
set -euo pipefail
root=/tmp/tandem-gpu
out=${OUT:-/tmp/tandem-gpu/out}; mkdir -p "$out"
export PYTHONPATH=$root/site:$PWD PYTHONUNBUFFERED=1 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export NCCL_NVLS_ENABLE=0 TANDEM_DATA_DIR=$root/data
plan=benchmarks/gpu/plans/one-gpu-llama-8b.yaml
case "${1:-}" in
  add) bash benchmarks/gpu/device-install.sh add .gpu/now/* ;;
  install)
    bash benchmarks/gpu/device-install.sh install
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$root/site" .gpu/extra/*.whl
    python3 -c "import vllm.entrypoints.openai.api_server, ray.serve, openai, fastapi, uvloop; print('imports ok')"
    python3 benchmarks/gpu/make_model.py /tmp/tandem-m8b
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt" ;;
  stack-tests)
    shift
    set -o pipefail
    TANDEM_TEST_PLAN=${TEST_PLAN-$plan} timeout "${STACK_TESTS_S:-500}" python3 -m pytest -p no:cacheprovider -q -rA \
      -m stack -k "not two-nodes and not two_node" --timeout 300 "$@" 2>&1 | tee "$out/stack-tests.log"
    cp -r /tmp/pytest-of-root/pytest-*/stacks*/*/gateway-up.log "$out/" 2>/dev/null || true ;;
  up)
    setsid python3 -m deploy.cli up --plan "$plan" --port 8000 > $root/stack.log 2>&1 < /dev/null &
    for _ in $(seq 1 300); do
      grep -q "Press Ctrl-C to stop." $root/stack.log && break
      if ! pgrep -f "deploy.cli up" > /dev/null; then break; fi
      sleep 2
    done
    cp $root/stack.log "$out/stack.log"; grep -q "Press Ctrl-C to stop." $root/stack.log ;;
  engine) grep -o "engine $2: http://[^ ]*" $root/stack.log | head -1 | sed 's/.*: //' ;;
  run) shift; "$@" ;;
  *) sed -n 2,9p "$0"; exit 2 ;;
esac
