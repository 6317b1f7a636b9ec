#!/usr/bin/env bash
# Installs every Debian 12 package attnscope needs to build, test and run.
# Idempotent: when everything is already installed it only checks and exits.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang llvm
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsentencepiece-dev sentencepiece
  libspdlog-dev libfmt-dev libyaml-cpp-dev libabsl-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libpcre2-dev libutf8proc-dev libssl-dev
  clang-format valgrind openssl systemd  # test tools: format check, memcheck, TLS certs, unit check
  python3-torch python3-grpcio python3-grpc-tools python3-numpy python3-matplotlib
  python3-pytest python3-protobuf python3-yaml
  python3-jinja2  # the reference renderer of the chat-template differential tests
  python3-tqdm python3-pandas python3-nbconvert python3-nbformat python3-nbclient python3-ipykernel
  nodejs chromium
)
# npm bundles the viewer (client/viewer) at build time. A Node.js from elsewhere (NodeSource)
# ships its own npm and conflicts with Debian's package, so Debian's npm only when none exists.
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(npm); fi

# ATTNSCOPE_SKIP_TORCH=1 leaves out Debian's libtorch (1.13, CPU-only) and its Python
# binding: the CUDA container (deploy/Dockerfile) brings the official libtorch 2.x C++
# distribution in /opt/libtorch instead, and its Ubuntu base has no such package.
if [ "${ATTNSCOPE_SKIP_TORCH:-0}" = "1" ]; then
  kept=()
  for pkg in "${PACKAGES[@]}"; do
    case "$pkg" in
      # chromium only drives the viewer's browser test, which the container does not run
      # (Ubuntu ships it as a snap, which a container build cannot install).
      libtorch-dev | python3-torch | chromium) ;;
      *) kept+=("$pkg") ;;
    esac
  done
  PACKAGES=("${kept[@]}")
fi

# ATTNSCOPE_PRINT_PACKAGES=1 prints the package list (one a line) and exits: for tests and
# for reviewing what a container build will install.
if [ "${ATTNSCOPE_PRINT_PACKAGES:-0}" = "1" ]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
