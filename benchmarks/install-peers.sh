#!/usr/bin/env bash
# Installs the libraries `metagrad bench` compares against, beside an installed metagrad.
#
# higher, torchopt and parallel-metalearn (imported as `metalearn`) come from the `bench`
# extra. learn2learn 0.2.0 is published only as a source archive whose Cython-generated C files
# predate Python 3.11: they are regenerated with Cython 0.29 before building. Its dependencies
# (torchvision, gym, ...) are not installed: `metagrad bench` imports only learn2learn's MAML,
# which needs none of them.
set -euo pipefail
pip install -e ".[bench]"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --no-deps --no-binary :all: learn2learn==0.2.0 -d "$work"
tar -xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
(
    cd "$work/learn2learn-0.2.0"
    cython -3 learn2learn/data/meta_dataset.pyx learn2learn/data/task_dataset.pyx \
        learn2learn/data/transforms.pyx
    pip install --no-deps --no-build-isolation .
)
