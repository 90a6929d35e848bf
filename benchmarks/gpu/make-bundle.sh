#!/usr/bin/env bash
# Build the bundle that brings vLLM (plus whatever else you name) to the device machine, which has no
# package index: the wheels installed here into one site folder for the device's Python (3.12,
# x86-64), pruned, packed with xz and split into parts small enough to travel one per call. Installing
# here and packing with xz makes 4 parts where the wheels themselves made 6, and the device only unpacks.
#
# usage: make-bundle.sh OUTDIR [--have FREEZE.txt] [--part-mb 58] [PACKAGE==VERSION ...]
#   OUTDIR      gets bundle.part-00, bundle.part-01, ... (one .tar.xz of the site folder) and bundle.list (the wheels)
#   --have F    `python3 -m pip list --format=freeze` taken on the device: those names are left out
#   PACKAGE     extra requirements (e.g. 'ray[serve]==2.60.0' typer rich orjson httptools)
# Always: vllm==0.26.0, the newest vLLM built for the device's torch 2.11.0+cu130 (CUDA 13).
set -euo pipefail
out=""; have=""; part_mb=58; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --have) have=$2; shift 2 ;;
    --part-mb) part_mb=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) if [ -z "$out" ]; then out=$1; else extra+=("$1"); fi; shift ;;
  esac
done
[ -n "$out" ] || { sed -n 3,9p "$0"; exit 2; }
mkdir -p "$out"; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
plats=(); for n in $(seq 17 39); do plats+=(--platform "manylinux_2_${n}_x86_64"); done
plats+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64 --platform any)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}" \
  -d "$work/all" vllm==0.26.0 "${extra[@]}"
mkdir -p "$work/bundle"
# The device already has these (torch 2.11 + its CUDA libraries); the rest of this list is optional
# for a text model and large (kernels for other model families, video/image codecs, MLA, tilelang).
skip='^(torch|torchaudio|torchvision|triton|nvidia[-_].*|cuda[-_].*|tokenspeed[-_].*|tilelang|z3[-_]solver|pynvvideocodec|torchcodec|opencv[-_].*|llvmlite|numba|quack[-_]kernels|humming[-_]kernels|kernels|mistral[-_]common|pycountry)$'
# ...but these match the patterns above and are needed: flashinfer (vLLM's sampler imports it) needs them.
keep='^(cuda-tile|nvidia-cudnn-frontend)$'
norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }
declare -A present=()
if [ -n "$have" ]; then while IFS='=' read -r name _; do [ -n "$name" ] && present[$(norm "$name")]=1; done < "$have"; fi
for f in "$work"/all/*.whl; do
  name=$(basename "$f" | cut -d- -f1); n=$(norm "$name")
  if [[ ! "$n" =~ $keep ]] && { [[ "$n" =~ $skip ]] || [ -n "${present[$n]:-}" ]; }; then continue; fi
  cp "$f" "$work/bundle/"
done
(cd "$work/bundle" && ls > "$out/bundle.list")
python3 -m pip install -q --no-deps --no-index --no-compile --target "$work/site" --python-version 3.12 \
  --implementation cp --only-binary=:all: "${plats[@]}" "$work"/bundle/*.whl
# Pruned, all unused by a dense text model on Hopper through Tandem: vLLM's FlashAttention-2 kernels
# (pre-Hopper GPUs; Hopper runs FA3 and the import is guarded in vllm_flash_attn), its Rust frontend
# (only with VLLM_RUST_FRONTEND_PATH), the Blackwell attention headers and DeepGEMM builds for other
# Pythons; Ray's Java jars and dashboard source maps; console scripts.
s=$work/site
rm -rf "$s"/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so "$s"/vllm/vllm-rs "$s"/vllm/third_party/fmha_sm100 \
  "$s"/vllm/third_party/deep_gemm/_C.cpython-31[134]-* "$s"/ray/jars "$s"/ray/dashboard/client/build/static/js/*.map \
  "$s"/bin
rm -f "$out"/bundle.part-*
tar -C "$work/site" -cf - . | xz -6 -T0 | split -b "$((part_mb * 1000 * 1000))" -d - "$out/bundle.part-"
ls -la "$out"; echo "$(wc -l < "$out/bundle.list") wheels; send one part per call (docs/gpu.md)"
