#!/usr/bin/env bash
# The runs whose eval_metrics.json a change of structure must leave byte-identical
# (training is deterministic on one machine). Run it before and after, then compare:
#
#   benchmarks/same_results.sh OUT_BEFORE      # on the old commit
#   benchmarks/same_results.sh OUT_AFTER       # on the new one
#   for f in OUT_BEFORE/*/eval_metrics.json; do cmp "$f" "OUT_AFTER/${f#OUT_BEFORE/}"; done
#
# SHORT=1 skips the main job (about 10 minutes on 2 cores); the short runs take about 10.
set -euo pipefail
out=${1:?usage: benchmarks/same_results.sh OUT_DIR}
py=${PYTHON:-python}
run() {  # name, config, overrides...
    local name=$1 config=$2; shift 2
    rm -rf "$out/$name"
    echo "== $name" >&2
    "$py" -m vsegjax.main --config="$config" --workdir="$out/$name" "$@" > "$out/$name.log" 2>&1
}
mkdir -p "$out"
if [ "${SHORT:-0}" != 1 ]; then
    run main configs/grfp_synthetic.py
fi
run grfp configs/grfp_synthetic.py --config.train.num_steps=40 \
    --config.stages.grfp.train.num_steps=20
run static configs/static_synthetic.py --config.train.num_steps=30
run sdc configs/sdc_synthetic.py --config.train.num_steps=30
run vplr_c configs/vplr_synthetic.py:c --config.train.num_steps=60
run warp_refine configs/warp_refine_synthetic.py --config.stages.static.train.num_steps=60 \
    --config.train.num_steps=60
run efc configs/efc_synthetic.py --config.train.num_steps=60
ls "$out"/*/eval_metrics.json
