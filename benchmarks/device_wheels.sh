#!/usr/bin/env bash
# Wheels of the packages genretag needs that the GPU machine's image lacks, for its Python 3.12
# (x86-64 manylinux), into .whl/ (git-ignored) so that `device.run(carry=[".whl"])` takes them.
#
#   bash benchmarks/device_wheels.sh            # here, once; about 40 MB, mostly PyAV
#
# torch, pytorch-lightning, torchmetrics, numpy, scipy, pandas, PyYAML, tqdm, tensorboard,
# psutil and pytest are already on that machine (see the device tool's KINDS.md): never carry
# torch. Versions are the ones this project's venv runs; `--no-deps` fetches none of their
# needs, so every missing one is named here. On the machine, before anything else:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=(
    nnAudio==0.3.4            # the log-mel front-end
    jsonargparse==4.53.0      # LightningCLI (fit) and `prepare`
    docstring_parser==0.18.0  # jsonargparse[signatures]
    typeshed_client==2.15.0   # jsonargparse[signatures]
    omegaconf==2.4.0          # parser_mode="omegaconf"
    av==18.1.0                # MP3 decoding
    soundfile==0.14.0         # MP3 writing (bundles libsndfile with LAME)
    cffi==2.1.1               # soundfile
    pycparser==3.12           # cffi
    soxr==1.1.0               # resampling
    mutagen==1.48.1           # tags
)
mkdir -p .whl
rm -f .whl/*.whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}"
ls -l .whl
du -sh .whl
