#!/bin/bash
# Usage: bash experiments/smoke_hashes.sh REPO OUTDIR -> OUTDIR/hashes.txt: the sha256 of every smoke model (final and best),
# every eval.json (timing keys dropped, paths made relative) and the Table 5 smoke table, for every method. Run it on
# two commits and diff the two files: a refactor that changes no result leaves them equal. OUTDIR must not exist.
set -euo pipefail
REPO=$(cd "$1" && pwd); OUT=$2
if [ -e "$OUT" ]; then echo "error: $OUT exists; give a new folder" >&2; exit 2; fi
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cd "$REPO"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
nice -n 10 python -m experiments.table5 --preset smoke --jobs 1 --results-dir "$OUT/table5" > "$OUT/table5.log" 2>&1
for m in cpt offline_distill sft_from_teacher; do
  t=embedded_tool; [ $m = cpt ] && t=embedded_knowledge
  nice -n 10 python -m sdft.train --preset smoke --method $m --task $t --output-dir "$OUT/$m" > "$OUT/$m.log" 2>&1
  nice -n 10 python -m eval.run --model "$OUT/$m" --task $t --preset smoke --output "$OUT/$m/evalout" >> "$OUT/$m.log" 2>&1
done
python - "$OUT" > "$OUT/hashes.txt" <<'PY'
import hashlib, json, sys
from pathlib import Path
root = Path(sys.argv[1])
VOLATILE = {"wall_clock_s", "seconds", "elapsed_s", "time_s", "timing", "timings", "runtime_s", "created", "date", "timestamp"}
def scrub(x):
    if isinstance(x, dict):
        return {k: scrub(v) for k, v in x.items() if k not in VOLATILE and not k.endswith("_seconds") and not k.endswith("_s") and "time" not in k}
    if isinstance(x, list):
        return [scrub(v) for v in x]
    if isinstance(x, str) and x.startswith(str(root)):
        return x[len(str(root)):]
    return x
for p in sorted(root.rglob("*")):
    rel = p.relative_to(root)
    if p.name.endswith(".safetensors") and "checkpoint-" not in str(rel):
        print(hashlib.sha256(p.read_bytes()).hexdigest(), rel)
    elif p.name == "eval.json" and p.is_file():
        d = scrub(json.loads(p.read_text()))
        print(hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest(), rel)
    elif p.name == "table5.md":
        print(hashlib.sha256(p.read_bytes()).hexdigest(), rel)
PY
wc -l "$OUT/hashes.txt"
