#!/usr/bin/env bash
# Every CUDA check and benchmark of issue 18 in one run, for a session that has a GPU (device time is short).
#   OUT=/some/folder bash benchmarks/gpu_check.sh        (the device tool sets $OUT; about 8-10 minutes)
# Each step has its own time limit and log, so one failure does not hide the others; summary.txt at the end.
set -u
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 SLICEWISE_CACHE="$OUT/cache" PYTHONUNBUFFERED=1
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
DATA=$($PY -c "from slicewise.io.samples import shared_data_dir; print(shared_data_dir())" 2>/dev/null)
status=()
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  status+=("$name: exit $rc in $((SECONDS - started)) s")
  echo "== $name: exit $rc in $((SECONDS - started)) s"; tail -25 "$OUT/$name.log"
}

step env 60 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else None, torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None, torch.distributed.is_nccl_available())'; grep -m1 'model name' /proc/cpuinfo; grep -o 'amx[a-z_0-9]*\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '"

# every family's forward under autocast, box prompts, teach (core.teach runs on the CPU today: timed as it is), Dice; the GPU table
step gpu_bench 240 $PY benchmarks/gpu_bench.py --out "$OUT/gpu_table.md"

# a fit epoch with AMP on CUDA (training config's mixed_precision is on by default)
step fit_amp 150 $PY -m slicewise_train.cli fit --data "$DATA/kvasir_seg" --model unet --epochs 1 --lr 0.001 \
  --device cuda --out "$OUT/fit_amp"

# torchrun prediction with NCCL (one rank per GPU; with one GPU the group still forms and reduces over NCCL)
mkdir -p "$OUT/in"; ls "$DATA/kvasir_seg/images/"*.png | head -100 | xargs -I{} ln -sf {} "$OUT/in/"
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); NGPU=$(( NGPU > 0 ? NGPU : 1 ))
step torchrun_nccl 120 $PY -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m slicewise predict \
  "$OUT/in" --out "$OUT/torchrun_nccl" --device cuda --reference "$DATA/kvasir_seg/masks"
step predict_one_gpu 90 $PY -m slicewise predict "$OUT/in" --out "$OUT/one_gpu" --device cuda \
  --reference "$DATA/kvasir_seg/masks"
step same_masks 30 $PY -c "
import sys, numpy as np; from pathlib import Path; from PIL import Image
a, b = Path(sys.argv[1]), Path(sys.argv[2]); names = sorted(p.name for p in a.glob('*.png'))
diff = [n for n in names if not np.array_equal(np.asarray(Image.open(a / n)), np.asarray(Image.open(b / n)))]
print(len(names), 'masks from torchrun,', len(list(b.glob('*.png'))), 'from one process;', len(diff), 'differ', diff[:5])
" "$OUT/torchrun_nccl" "$OUT/one_gpu"

# this host's CPU (often one with AMX): the precision table that fills BF16_CHOICES in models/precision.py
step cpu_precision 200 $PY benchmarks/precision.py --images 10 --repeats 3 --out "$OUT/cpu_precision.md"

printf '%s\n' "${status[@]}" | tee "$OUT/summary.txt"
