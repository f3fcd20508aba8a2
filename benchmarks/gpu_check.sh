#!/usr/bin/env bash
# Every GPU measurement the README asks for, in one run on a lent GPU box (JAX, no TensorFlow there).
#
# On this machine, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     keras namex optree dask distributed partd locket tblib zict tornado scikit-image lazy-loader imageio tifffile \
#     dvc-render cloudpickle toolz fsspec sortedcontainers msgpack jinja2 markupsafe \
#     pytest pluggy iniconfig pytest-xdist execnet
# then run this script on the device with `.whl` carried along; it writes everything under $OUT (or ./gpu-out).
#
# A device command has a time limit, so the steps run in the order of what is most wanted, each writing its
# output as it goes, and a step that would not finish by GPU_CHECK_SECONDS (default 540) after the start
# is skipped, saying so in $OUT/skipped.txt. The test suite, last, gets whatever time is left.
# GPU_CHECK_STEPS="tests" (names as below, space-separated) runs only those steps. On one H200 at a9b6f9e the
# benchmarks took 84, 59, 64, 63, 0, 90 (stopped), 72 s, and the suite about 330 s: two calls, e.g.
#   GPU_CHECK_STEPS="vgg16-28 vgg16-224 predict-vgg16-224 io extract-process mobilenet-224 resnet50-224", then "tests".
#
# The whole pipeline (step `pipeline`, benchmarks/pipeline_times.sh) runs only when GPU_CHECK_STEPS names it, in a
# call of its own: every stage through the featpipe commands on all 60,000/10,000 Fashion-MNIST images, each
# stage's time in $OUT/pipeline-times.txt as it ends. It reads the four IDX files from .fashion-mnist/, taken along
# like .whl (about 30 MB, git-ignored; the run tool's carry: [".whl", ".fashion-mnist"]). On this machine, once:
#   mkdir -p .fashion-mnist && cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fashion-mnist/
# then on the device: GPU_CHECK_STEPS=pipeline GPU_CHECK_SECONDS=580 bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-gpu-out}
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  date -u; git rev-parse HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total --format=csv
  python3 -c "import jax, keras, h5py; print('jax', jax.__version__, 'keras', keras.__version__, 'h5py', h5py.__version__, h5py.version.hdf5_version)"
} 2>&1 | tee "$OUT/machine.txt"

step() {  # name, seconds it may take, then the command; skipped when it would pass the deadline
  local name=$1 budget=$2; shift 2
  [[ -z ${GPU_CHECK_STEPS:-} || " $GPU_CHECK_STEPS " == *" $name "* ]] || return 0
  if (( budget < 1 || SECONDS + budget > DEADLINE )); then
    echo "$name: skipped, $budget s would pass the deadline" | tee -a "$OUT/skipped.txt"
    return
  fi
  local start=$SECONDS
  timeout "$budget" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "$name: ${PIPESTATUS[0]} (exit status) in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}
bench() {  # name, seconds, then the benchmark's arguments
  local name=$1 budget=$2; shift 2
  step "$name" "$budget" python3 benchmarks/extract_benchmark.py --batch-size 256 --precision mixed_float16 --rounds 1 \
    --compare none --breakdown --workdir /tmp/bench-"$name" --json "$OUT/$name.json" "$@"
}
extract_process() {  # the whole extract process, start-up included, as a user runs it
  python3 -c "
import numpy as np
from storage.image_store import ImageSplit, write_image_store
images = np.random.default_rng(0).integers(0, 256, (16000, 28, 28, 1), dtype=np.uint8)
labels = np.arange(16000) % 10
write_image_store('/tmp/store.h5', {'train': ImageSplit(images, labels, [str(i) for i in range(16000)]),
                  'test': ImageSplit(images[:0], labels[:0], [])}, source='gpu', class_names=[str(i) for i in range(10)], seed=0)
" && /usr/bin/time -v python3 -c "from pipeline.cli import extract_main; extract_main()" \
    --backbone vgg16 --weights none --precision mixed_float16 --batch-size 256 --images /tmp/store.h5 \
    --out /tmp/vgg16.h5 --params /dev/null 2>&1 | grep -v "img/s"
}
export -f extract_process  # so that timeout can run it, through bash

bench vgg16-28 120 --sizes 16000                                   # Fashion-MNIST-like store
bench vgg16-224 120 --sizes 8000 --image-size 224 --channels 3     # a folder of photos
# predict: VGG16 on a folder of JPEGs decoded to 224x224 on every core, against the compiled forward pass
# (target: >= 0.8 of it) and against prepare's decoding + extract of the same files (target: >= 0.9).
step predict-vgg16-224 150 python3 benchmarks/predict_benchmark.py --backbone vgg16 --sizes 4000 --image-size 224 \
  --photo-size 320 256 --batch-size 256 --precision mixed_float16 --rounds 1 --workdir /tmp/bench-predict \
  --json "$OUT/predict-vgg16-224.json"
# prepare on a folder of photos, every core against one (and the other reading and writing cases).
step io 120 python3 benchmarks/io_benchmark.py --photos 2048 --rows 16384 --rounds 1 --json "$OUT/io.json"
step extract-process 60 bash -c extract_process
bench mobilenet-224 120 --backbone mobilenet_v2 --sizes 8000 --image-size 224 --channels 3
bench resnet50-224 90 --backbone resnet50 --sizes 8000 --image-size 224 --channels 3

# The whole pipeline, prepare to report, on all of Fashion-MNIST with random weights (no ImageNet weights there),
# params.yaml's values otherwise: only when named, with every second left (target: <= 600 s on one H100/H200).
[[ " ${GPU_CHECK_STEPS:-} " == *" pipeline "* ]] &&
  step pipeline $((DEADLINE - SECONDS - 5)) env OUT="$OUT" bash benchmarks/pipeline_times.sh

# The test suite on JAX, one worker per core (the DVC test needs dvc, which is not carried). One line per
# test as it ends, so that a run the deadline stops still says which tests failed (tests-failed.txt).
step tests $((DEADLINE - SECONDS - 10)) python3 -m pytest -v -m "not network" -p no:cacheprovider -p no:benchmark \
  -n 16 --deselect tests/test_dvc_pipeline.py
[[ -f $OUT/tests.txt ]] && grep -E "(FAILED|ERROR) " "$OUT/tests.txt" > "$OUT/tests-failed.txt"
