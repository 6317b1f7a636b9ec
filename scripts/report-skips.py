#!/usr/bin/env python3
"""Lists every skipped test of a ctest run, so that no skip goes unseen.

Reads ctest's full log (<build>/Testing/Temporary/LastTest.log), which holds each test's
whole output, and finds skips at every level:
  - ctest tests that did not run or were marked skipped;
  - GoogleTest's GTEST_SKIP (`[  SKIPPED ] Suite.Name`);
  - pytest's skips (`SKIPPED [n] file:line: reason`, printed with -rs);
  - node --test skips (`ok N - name # SKIP reason`).

Prints "N skipped" and one line per skip. With --ci, exits 1 when a skip is not on the
allowed list (tests/allowed-skips.txt: globs of skips that need hardware CI lacks).

  report-skips.py LOG [--allowed FILE] [--ci]
"""

import argparse
import fnmatch
import re
import sys

TEST_START = re.compile(r"^\d+/\d+ Test: (.+)$")
GTEST_SKIP = re.compile(r"^\[  SKIPPED \] ([^\s(]+\.[^\s(]+)")
PYTEST_SKIP = re.compile(r"^SKIPPED \[(\d+)\] (.+)$")
NODE_SKIP = re.compile(r"^\s*ok \d+ - (.+?) # SKIP\b\s*(.*)$")


def parse(log_text):
    """Yields (ctest name, output lines, result line) per test block."""
    name, output, in_output, result = None, [], False, ""
    for line in log_text.splitlines():
        match = TEST_START.match(line)
        if match:
            if name is not None:
                yield name, output, result
            name, output, in_output, result = match.group(1), [], False, ""
            continue
        if name is None:
            continue
        if line == "Output:":
            in_output = True
            continue
        if line == "<end of output>":
            in_output = False
            continue
        if in_output:
            output.append(line)
        elif line.startswith("Test ") and line.endswith("."):
            result = line
    if name is not None:
        yield name, output, result


def find_skips(log_text):
    skips = []  # (name, reason)
    for name, output, result in parse(log_text):
        found = {}  # name -> reason, first seen
        run_start = 0
        for index, line in enumerate(output):
            if line.startswith("[ RUN      ]"):
                run_start = index + 1
            gtest = GTEST_SKIP.match(line)
            if gtest:
                # The skip message: the lines between the RUN line and this one.
                reason = " ".join(l.strip() for l in output[run_start:index]
                                  if l.strip() and not l.strip().endswith(": Skipped"))
                found.setdefault(gtest.group(1), reason)
            pytest = PYTEST_SKIP.match(line)
            if pytest:
                found.setdefault(f"{name}: {pytest.group(2)}", f"{pytest.group(1)} test(s)")
            node = NODE_SKIP.match(line)
            if node:
                found.setdefault(f"{name}: {node.group(1)}", node.group(2))
        if not found and ("Skipped" in result or "Not Run" in result):
            found[name] = result
        skips.extend(found.items())
    return skips


def load_allowed(path):
    if not path:
        return []
    patterns = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                patterns.append(line)
    return patterns


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--allowed", default="")
    parser.add_argument("--ci", action="store_true")
    args = parser.parse_args()
    with open(args.log, errors="replace") as f:
        skips = find_skips(f.read())
    allowed = load_allowed(args.allowed)
    refused = []
    print(f"{len(skips)} skipped")
    for name, reason in skips:
        ok = any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)
        if not ok:
            refused.append(name)
        print(f"  SKIPPED {name}{' (' + reason + ')' if reason else ''}"
              f"{'  [allowed: needs hardware CI lacks]' if ok else ''}")
    if args.ci and refused:
        print(f"CI: {len(refused)} skip(s) not on {args.allowed or 'the allowed list'}; a skip "
              "is a failure in CI (a missing Debian tool belongs in scripts/install-deps.sh)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
