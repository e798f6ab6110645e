#!/usr/bin/env bash
# FlashAttention-4 for a device machine that cannot reach PyPI (the fourth session's runs, docs/performance.md).
#
#   bench/fa4_wheels.sh [DIR]      (default .fa4; add DIR to .git/info/exclude)
#
# Downloads flash-attn-4 and its CUDA-13 CuTe DSL stack for CPython 3.12 on x86-64 Linux into DIR/small (~10 MB of
# wheels), and packs the one big wheel (nvidia-cutlass-dsl-libs-cu13, 92 MB) as an xz tar split into DIR/part1 and
# DIR/part2, so each call stays under the device's 64 MiB carry limit. Then, on one warm machine:
#   call 1, carry DIR/small and DIR/part1:
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/small/*.whl && cp DIR/part1/* /tmp/
#   call 2, carry DIR/part2:
#     cat /tmp/cu13.tar.xz.part-* DIR/part2/* | xz -dc | tar xf - -C /tmp/site
#     export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages   # its .pth is not read from --target
# (pip's --upgrade with --target replaces whole package folders: install every wheel in one pip call, before the
# archive is unpacked into the same folder.)
set -euo pipefail

out="${1:-.fa4}"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
get() {
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --pre -d "$1" "${@:2}"
}
rm -rf "$out" && mkdir -p "$out/small" "$out/part1" "$out/part2"
get "$out/small" "flash-attn-4==4.0.0b36" "nvidia-cutlass-dsl==4.8.1" "nvidia-cutlass-dsl-libs-base==4.8.1" \
  "nvidia-cutlass-dsl-libs-core==4.8.1" "quack-kernels==0.6.5" "apache-tvm-ffi==0.1.15.post2" \
  "torch-c-dlpack-ext==0.1.5"
get "$tmp" "nvidia-cutlass-dsl-libs-cu13==4.8.1"
mkdir "$tmp/cu13"
"$python" -m zipfile -e "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl "$tmp/cu13"
rm -rf "$tmp"/cu13/nvidia_cutlass_dsl/cu13/lib/stubs/aarch64* "$tmp"/cu13/nvidia_cutlass_dsl/cu13/lib/stubs/*qnx*
# one thread, maximum compression: ~64 MB from 237 MB, a few minutes
tar cf - -C "$tmp/cu13" . | xz -9 > "$tmp/cu13.tar.xz"
split -b 31M "$tmp/cu13.tar.xz" "$tmp/cu13.tar.xz.part-"
parts=("$tmp"/cu13.tar.xz.part-*)
[ "${#parts[@]}" = 2 ] || { echo "fa4_wheels.sh: expected 2 parts, got ${#parts[@]}" >&2; exit 1; }
mv "${parts[0]}" "$out/part1/" && mv "${parts[1]}" "$out/part2/"
du -sh "$out"/*
