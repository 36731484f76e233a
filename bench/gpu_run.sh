#!/usr/bin/env bash
# bench/gpu_run.sh: issue 12's figures on a real GPU, in one call.
#
# Installs what it needs (Deno from npm, the Vulkan loader from Debian, an
# NVIDIA Vulkan ICD file where the host's driver is mounted without one),
# checks that navigator.gpu gives a hardware (non-fallback) adapter, makes
# ~1B- and ~7B-shaped random Llama checkpoints on the machine, runs
# bench/generate_bench.ts --backend webgpu on each with a per-step timeout,
# and prints the figures: W8A16 decode as % of HBM bandwidth, W4A16 vs
# W8A16, prefill of 512 tokens as % of fp16 peak.
#
#   bench/gpu_run.sh                      # tiny smoke run, then 1b and 7b
#   bench/gpu_run.sh --shapes 1b          # one shape
#   bench/gpu_run.sh --shape tiny --allow-fallback   # dry run on lavapipe
#
# Environment: DENO (a deno binary; default: deno on PATH, else
# `npx -y deno@2.9.6`), BUDGET (seconds for the whole script, default 560, so
# one call ends inside a 10-minute limit; a shape that cannot fit is skipped
# and said so), STEP_TIMEOUT (seconds per shape; default 120 for tiny, 240
# for 1b, 420 for 7b, which includes making its 13.5 GB checkpoint, ~2 min),
# WORK (checkpoint cache, default /tmp/tinyq-gpu: a rerun reuses the
# checkpoints), HBM_GBS / FP16_TFLOPS (the GPU's spec figures, default:
# looked up from nvidia-smi's name). Where one call cannot hold everything,
# run `--shapes "tiny 1b"` and `--shapes 7b` as two calls.
set -euo pipefail

cd "$(dirname "$0")/.."
SHAPES="tiny 1b 7b"
ALLOW_FALLBACK=0
SCHEMES="w8a16,w4a16"
START=$(date +%s)
BUDGET="${BUDGET:-560}"
while [ $# -gt 0 ]; do
  case "$1" in
    --shapes | --shape) SHAPES="$2"; shift 2 ;;
    --schemes) SCHEMES="$2"; shift 2 ;;
    --allow-fallback) ALLOW_FALLBACK=1; shift ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
WORK="${WORK:-/tmp/tinyq-gpu}"
mkdir -p "$WORK"
say() { printf '\n== %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Deno ------------------------------------------------------------------
if [ -n "${DENO:-}" ]; then
  deno_cmd=("$DENO")
elif command -v deno >/dev/null 2>&1; then
  deno_cmd=(deno)
elif command -v npx >/dev/null 2>&1; then
  deno_cmd=(npx -y deno@2.9.6)
else
  say "installing Node.js (for npx) from Debian"
  as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm
  deno_cmd=(npx -y deno@2.9.6)
fi
# The binary itself, so that `timeout` signals deno and not an npx wrapper.
if ! deno_bin="$("${deno_cmd[@]}" eval 'console.log(Deno.execPath())')"; then
  say "cannot run Deno (${deno_cmd[*]}); offline? set DENO=/path/to/deno (and DENO_DIR to a cache holding the npm packages of deno.json)"
  exit 1
fi
deno_cmd=("$deno_bin")
say "deno: $("$deno_bin" --version | head -1) ($deno_bin)"

# --- Vulkan: the loader from Debian, the NVIDIA ICD from the host driver ----
libs() { { /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null || true; }; }
if ! libs | grep -q 'libvulkan\.so\.1' && ! ls /usr/lib/*/libvulkan.so.1 >/dev/null 2>&1; then
  say "installing the Vulkan loader (libvulkan1, mesa-vulkan-drivers)"
  as_root apt-get update -qq
  as_root apt-get install -y -qq mesa-vulkan-drivers libvulkan1
fi
GPU_NAME=""
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  say "nvidia-smi: $GPU_NAME, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1), $(nvidia-smi --query-gpu=memory.total --format=csv,noheader | head -1)"
  icd=""
  for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$f" ] && icd="$f"
  done
  if [ -z "$icd" ]; then
    # Containers often mount the driver's libraries but not its ICD file;
    # the NVIDIA Vulkan driver lives in libGLX_nvidia.so.0.
    lib="$(libs | awk '/libGLX_nvidia\.so\.0/ {print $NF; exit}')"
    if [ -n "$lib" ]; then
      icd="$WORK/nvidia_icd.json"
      printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$lib" >"$icd"
      say "wrote $icd for $lib"
    else
      say "no NVIDIA Vulkan driver found (libGLX_nvidia.so.0): the container needs NVIDIA_DRIVER_CAPABILITIES to include graphics"
    fi
  fi
  if [ -n "$icd" ]; then
    export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
  fi
fi

# --- The adapter must be hardware --------------------------------------------
say "probing navigator.gpu"
probe="$("${deno_cmd[@]}" run -A bench/_webgpu_probe.ts 2>/dev/null || true)"
echo "$probe"
case "$probe" in
  *'"fallback":false'*) ;;
  *'"fallback":true'*)
    if [ "$ALLOW_FALLBACK" = 1 ]; then
      say "software adapter accepted (--allow-fallback): a dry run, not GPU figures"
    else
      say "the adapter is a software fallback: no GPU figures (see the Vulkan lines above)"
      exit 1
    fi ;;
  *) say "navigator.gpu gave no adapter"; exit 1 ;;
esac

# --- Spec figures (dense fp16 tensor-core TFLOP/s, HBM GB/s) ------------------
if [ -z "${HBM_GBS:-}" ] || [ -z "${FP16_TFLOPS:-}" ]; then
  spec=""
  case "$GPU_NAME" in
    *H200*) spec="4800 989" ;;
    *H100*PCIe*) spec="2000 756" ;;
    *H100*) spec="3350 989" ;;
    *A100*80GB*) spec="2039 312" ;;
    *A100*) spec="1555 312" ;;
    *L40S*) spec="864 362" ;;
    *L4) spec="300 121" ;;
    *A10G*) spec="600 125" ;;
    *"RTX 4090"*) spec="1008 165" ;;
    *T4) spec="320 65" ;;
  esac
  if [ -n "$spec" ]; then
    HBM_GBS="${HBM_GBS:-${spec% *}}"
    FP16_TFLOPS="${FP16_TFLOPS:-${spec#* }}"
  fi
fi
spec_args=()
[ -n "${HBM_GBS:-}" ] && spec_args+=(--hbm-gbs "$HBM_GBS")
[ -n "${FP16_TFLOPS:-}" ] && spec_args+=(--fp16-tflops "$FP16_TFLOPS")
say "spec figures: HBM ${HBM_GBS:-unknown} GB/s, fp16 ${FP16_TFLOPS:-unknown} TFLOP/s"

# --- The bench, one shape per step -------------------------------------------
summary="$WORK/summary.txt"
: >"$summary"
for shape in $SHAPES; do
  prompt=512
  new=64
  limit=240
  [ "$shape" = tiny ] && prompt=64 && new=16 && limit=120
  [ "$shape" = 7b ] && new=32 && limit=420
  limit="${STEP_TIMEOUT:-$limit}"
  left=$((BUDGET - ($(date +%s) - START) - 15))
  if [ "$left" -lt 60 ]; then
    echo "$shape: skipped, ${left}s of the ${BUDGET}s budget left (run it in its own call)" | tee -a "$summary"
    continue
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "shape $shape: prompt $prompt, decode $new, schemes $SCHEMES (timeout ${limit}s)"
  log="$WORK/bench-$shape.log"
  set +e
  timeout --kill-after=10 "$limit" "${deno_cmd[@]}" run -A bench/generate_bench.ts \
    --shape "$shape" --backend webgpu --schemes "$SCHEMES" \
    --prompt-tokens "$prompt" --new-tokens "$new" --rounds 1 --no-torch --no-memory \
    --dir "$WORK" ${spec_args[@]+"${spec_args[@]}"} 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "$shape: timed out after ${limit}s" | tee -a "$summary"
  elif [ "$rc" != 0 ]; then
    echo "$shape: failed (exit $rc), see $log" | tee -a "$summary"
  fi
  grep '^target:' "$log" | sed "s/^/$shape /" >>"$summary" || true
done

say "figures"
cat "$summary"
