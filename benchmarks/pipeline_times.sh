#!/usr/bin/env bash
# Every stage of the pipeline, prepare → extract → baseline → train → scratch → curves → explain → report, run
# through the featpipe commands (no DVC) on Fashion-MNIST, each stage's wall time written as it ends: one line
# `stage seconds exit_code` appended to $OUT/pipeline-times.txt and printed, so that a run a time limit stops
# still says which stages it finished and how long each took. `train` runs one head at a time, as dvc.yaml's
# stages do (train-rf, train-svm, ...); `finetune` one backbone at a time, when finetune.backbones names any.
#
# The params are the project's params.yaml with these changes, written to the run's own params.yaml:
#   data.path         $FASHION_MNIST, the four IDX .gz files (default: .fashion-mnist/ in the project root)
#   data.train_size, data.test_size
#                     null (all 60,000/10,000), or PIPELINE_SUBSET images each
#   extract.weights   none: random, seeded weights (a GPU box has no ImageNet weights and no network); the times
#                     are what this measures, the accuracies are not what the features are worth
#   extract.batch_size 256, extract.precision mixed_float16: extract's settings on a GPU (gpu_check.sh's)
#   then PIPELINE_PARAMS, space-separated key=value pairs as `dvc exp run -S` takes them (values in YAML),
#   e.g. PIPELINE_PARAMS="extract.precision=float32 scratch.epochs=2 curves.repeats=1".
# Every other value stays params.yaml's, so a full run times what `dvc repro` of the default params does on all
# of Fashion-MNIST.
#
# The stages run in a folder of their own, left in place (PIPELINE_DIR, empty, default a new
# /tmp/featpipe-pipeline.XXXXXX), never in the project's data/ and reports/. At the end (or when stopped) the
# metrics, report.md and curves.csv are copied to $OUT/pipeline-reports/. gpu_check.sh runs this as its `pipeline`
# step; on its own, e.g. on a 2-core CPU (batch 256 needs more memory than a CPU run of VGG16 at 224x224 has):
#   PIPELINE_SUBSET=100 OUT=/tmp/pipeline-out PIPELINE_PARAMS="extract.batch_size=32 extract.precision=float32 \
#     scratch.epochs=3 train.dense.epochs=3 curves.repeats=2 explain.per_class=1 explain.lime.samples=16 \
#     explain.occlusion.stride=8" bash benchmarks/pipeline_times.sh
# Exit status: 0 when every stage succeeded, 1 when one failed (each stage runs even so), 2 for a bad setting.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
TIMES=$OUT/pipeline-times.txt PARAMS=$OUT/pipeline-params.yaml
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
featpipe() { python3 -c "from pipeline.cli import main; main()" "$@"; }  # the console script isn't installed there
bad() { echo "pipeline: $*" >&2; exit 2; }

data=${FASHION_MNIST:-$REPO/.fashion-mnist}
[[ -d $data ]] || bad "no Fashion-MNIST folder $data: copy the four IDX .gz files there (see gpu_check.sh)"
data=$(cd "$data" && pwd)
size=null
if [[ -n ${PIPELINE_SUBSET:-} ]]; then
  [[ $PIPELINE_SUBSET =~ ^[1-9][0-9]*$ ]] || bad "PIPELINE_SUBSET must be a number of images, got $PIPELINE_SUBSET"
  size=$PIPELINE_SUBSET
fi
# The run's params: params.yaml, then the changes above, then PIPELINE_PARAMS.
# shellcheck disable=SC2086  # PIPELINE_PARAMS is a list of key=value words
python3 - "$REPO/params.yaml" "$PARAMS" data.path="$data" data.train_size=$size data.test_size=$size \
  extract.weights=none extract.batch_size=256 extract.precision=mixed_float16 ${PIPELINE_PARAMS:-} <<'EOF' || exit 2
import sys
import yaml

source, target, *changes = sys.argv[1:]
with open(source, encoding="utf-8") as stream:
    params = yaml.safe_load(stream) or {}
for change in changes:
    key, equals, value = change.partition("=")
    if not equals or not key:
        sys.exit(f"pipeline: PIPELINE_PARAMS: {change!r} is not key=value")
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)
with open(target, "w", encoding="utf-8") as stream:
    yaml.safe_dump(params, stream, sort_keys=False)
EOF
# featpipe's own check of them (unknown keys, bad values), and the heads and backbones they name
names=$(python3 -c "
import sys
from pipeline.params import load_params
try:
    params = load_params(sys.argv[1])
except Exception as error:
    sys.exit(f'pipeline: {error}')
print(*params['train']['classifiers'])
print(*params['finetune']['backbones'])" "$PARAMS") || exit 2
read -r -a classifiers <<< "$(sed -n 1p <<< "$names")"
read -r -a finetunes <<< "$(sed -n 2p <<< "$names")"

if [[ -n ${PIPELINE_DIR:-} ]]; then
  WORK=$PIPELINE_DIR
  [[ -e $WORK && -n $(ls -A "$WORK") ]] && bad "$WORK is not empty (extract would resume from what is there)"
  mkdir -p "$WORK" || exit 2
else
  WORK=$(mktemp -d /tmp/featpipe-pipeline.XXXXXX) || exit 2
fi
cd "$WORK" && cp "$PARAMS" params.yaml || exit 2

{
  echo "pipeline: in $WORK, $(nproc) cores, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "pipeline: Fashion-MNIST from $data, $([[ $size == null ]] && echo "all 60,000/10,000 images" || echo "$size images per split")"
  echo "pipeline: extract.weights none (random, seeded): no ImageNet weights on a GPU box; the times count, not the accuracies"
  echo "pipeline: params: params.yaml's, with data.* and extract.* as above${PIPELINE_PARAMS:+ and $PIPELINE_PARAMS} ($PARAMS)"
} | tee "$OUT/pipeline-settings.txt"

keep_reports() {  # the small text results, for the record
  mkdir -p "$OUT/pipeline-reports"
  cp -r reports/metrics reports/report.md reports/curves/curves.csv "$OUT/pipeline-reports/" 2>/dev/null
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
current="" started="" failed=0 all_started=$(now)
stopped() {  # a time limit or ^C: the stage under way gets its line, then stop
  [[ -n $current ]] && echo "$current $(elapsed "$started") $1" | tee -a "$TIMES"
  echo "total $(elapsed "$all_started") $1" | tee -a "$TIMES"
  keep_reports
  exit "$1"
}
trap 'stopped 143' TERM
trap 'stopped 130' INT
stage() {  # name, then the featpipe arguments
  current=$1 started=$(now); shift
  echo "== $current: featpipe $*"
  featpipe "$@"
  local code=$?
  echo "$current $(elapsed "$started") $code" | tee -a "$TIMES"
  (( code == 0 )) || failed=1
  current=""
}

echo "# stage seconds exit_code (143: stopped by a time limit; total: 1 when a stage failed), $(date -u +%FT%TZ)" >> "$TIMES"
stage prepare prepare
stage extract extract
stage baseline baseline
for classifier in "${classifiers[@]}"; do
  stage "train-$classifier" train --classifier "$classifier"
done
stage scratch scratch
for backbone in "${finetunes[@]}"; do
  stage "finetune-$backbone" finetune --backbone "$backbone"
done
stage curves curves
stage explain explain
stage report report
echo "total $(elapsed "$all_started") $failed" | tee -a "$TIMES"
keep_reports
exit "$failed"
