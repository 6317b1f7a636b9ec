#!/usr/bin/env bash
# Checks that every tracked C++ file is formatted by clang-format (.clang-format: Google
# style), without changing anything. Fix with: clang-format -i FILE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v clang-format >/dev/null; then
  echo "check-format: clang-format not found (scripts/install-deps.sh installs it)" >&2
  exit 2
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cpp' '*.hpp')
else
  mapfile -t files < <(find . -path ./build\* -prune -o \( -name '*.cc' -o -name '*.h' \) -print)
fi
if ! clang-format --dry-run -Werror "${files[@]}"; then
  echo "check-format: the files above are not clang-formatted; run clang-format -i on them" >&2
  exit 1
fi
echo "check-format: ${#files[@]} C++ files formatted"
