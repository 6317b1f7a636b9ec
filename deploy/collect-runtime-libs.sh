#!/usr/bin/env bash
# Copies the shared libraries that the given binaries load from the build image's distro
# packages (gRPC, protobuf, abseil, spdlog, yaml-cpp, PCRE2, utf8proc, OpenSSL, ...) into
# DEST, so the runtime image needs neither the -dev packages nor a second package list that
# would have to track the distro's versioned runtime package names.
#
# Left out: libtorch (copied whole from /opt/libtorch/lib), the CUDA toolkit libraries
# (in the runtime base image), the driver (libcuda, libnvidia-*: mounted by the NVIDIA
# container toolkit at run time) and the C/C++ runtime that every Ubuntu base image has.
#
#   collect-runtime-libs.sh DEST BINARY...
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 DEST BINARY..." >&2
  exit 2
fi
dest=$1
shift
mkdir -p "$dest"

skip_re='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libnvidia-)'

for binary in "$@"; do
  if ldd "$binary" | grep -q 'not found'; then
    echo "collect-runtime-libs: unresolved libraries for $binary:" >&2
    ldd "$binary" | grep 'not found' >&2
    exit 1
  fi
  # Lines look like "libfoo.so.1 => /usr/lib/x86_64-linux-gnu/libfoo.so.1 (0x...)".
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
    while read -r soname path; do
      if [[ "$soname" =~ $skip_re ]]; then continue; fi
      case "$path" in
        /opt/libtorch/* | /usr/local/cuda* | /usr/local/nvidia/*) continue ;;
      esac
      cp -Lu "$path" "$dest/$soname"
    done
done
echo "collect-runtime-libs: $(ls "$dest" | wc -l) libraries in $dest"
