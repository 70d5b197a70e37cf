#!/usr/bin/env python3
"""Checks that no source file is over 500 lines and no function over 60 (STYLE.md: small pieces).

Scans the C++ and CUDA sources (*.h, *.cc, *.cu, *.cuh) under kernels/, storage/, worker/, router/,
tools/ and proto/; tests/, build folders and generated files (a first line that says "Generated ...
Do not edit") are not scanned. A function's length is its line span, first line to closing brace,
as lizard finds it: what a reader has to hold, blank lines and comments included.

Where a piece is long for a reason, the reason is written next to it:
  - a function: the comment block just above it, or one of its first lines, holds `Long: <reason>`;
  - a file: its first comment block holds `Long file: <reason>`.
Code that another change is refactoring right now is listed in tools/size_exceptions.txt, one entry
a line with a comment: `path  # why` lets that file be long, `path:Name  # why` lets that function
be long (Name as this script prints it). Entries that no longer match anything are reported, but
do not fail the check, so that the branch that fixes the code and the one that lists it can land in
either order.

Usage: tools/check_sizes.py [--root DIR] [--exceptions FILE]
Exit status: 0 clean, 1 violations (one a line on stdout), 2 bad usage or exceptions file.
Needs the PyPI package lizard (tools/install-deps.sh installs it).
"""

import argparse
import os
import re
import sys

try:
    import lizard
except ImportError:
    sys.stderr.write("check_sizes: the Python package 'lizard' is missing; "
                     "tools/install-deps.sh installs it (python3 -m pip install lizard)\n")
    sys.exit(2)

FILE_LIMIT = 500
FUNCTION_LIMIT = 60
SCANNED_DIRS = ("kernels", "storage", "worker", "router", "tools", "proto")
SUFFIXES = (".h", ".cc", ".cu", ".cuh")
# A reason must follow the marker: a bare `Long:` says nothing to the next reader.
FUNCTION_MARKER = re.compile(r"\bLong:\s*\S")
FILE_MARKER = re.compile(r"\bLong file:\s*\S")
GENERATED = re.compile(r"\bGenerated\b.*\bDo not edit\b", re.IGNORECASE)
# How many lines of a function, from its first, may carry its `Long:` comment.
FIRST_LINES = 4
# How many signature lines (a template head, a return type on its own line) may stand between the
# comment block and the line lizard reports as the function's first.
SIGNATURE_LINES = 2


def source_files(root):
    """Yields the scanned files as paths relative to root, sorted, with '/' separators."""
    found = []
    for top in SCANNED_DIRS:
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "build"))]
            for name in filenames:
                if name.endswith(SUFFIXES):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def is_comment(line):
    s = line.strip()
    return s.startswith(("//", "/*", "*"))


def first_comment_block(lines):
    """The comment lines at the top of a file (before the first line of code), joined."""
    block = []
    for line in lines:
        if not line.strip():
            if block:
                break
            continue
        if not is_comment(line):
            break
        block.append(line)
    return "\n".join(block)


def comment_above(lines, start):
    """The comment block just above 1-based line `start`, skipping a few signature lines."""
    i = start - 2  # 0-based index of the line above
    skipped = 0
    while i >= 0 and not is_comment(lines[i]) and lines[i].strip() and skipped < SIGNATURE_LINES:
        i -= 1
        skipped += 1
    block = []
    while i >= 0 and is_comment(lines[i]):
        block.append(lines[i])
        i -= 1
    return "\n".join(reversed(block))


def function_has_reason(lines, fn):
    head = "\n".join(lines[fn.start_line - 1:min(fn.end_line, fn.start_line - 1 + FIRST_LINES)])
    return bool(FUNCTION_MARKER.search(comment_above(lines, fn.start_line)) or
                FUNCTION_MARKER.search(head))


def violations_in(root, rel):
    """Yields (kind, key, message) for one file; kind is 'file' or 'function'."""
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    if lines and GENERATED.search(lines[0]):
        return
    top = first_comment_block(lines)
    if len(lines) > FILE_LIMIT and not FILE_MARKER.search(top):
        yield "file", rel, f"{rel}: {len(lines)} lines (limit {FILE_LIMIT})"
    info = lizard.analyze_file.analyze_source_code(rel, text)
    for fn in info.function_list:
        span = fn.end_line - fn.start_line + 1
        if span > FUNCTION_LIMIT and not function_has_reason(lines, fn):
            yield ("function", f"{rel}:{fn.name}",
                   f"{rel}:{fn.start_line}: function {fn.name} is {span} lines "
                   f"(limit {FUNCTION_LIMIT})")


def read_exceptions(path):
    """The entries of the exceptions file: a set of 'path' and 'path:Name' strings."""
    entries = set()
    if not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            entry, sep, why = line.partition("#")
            if not sep or not why.strip():
                raise ValueError(f"{path}:{number}: an entry needs a '# reason': {line}")
            entries.add(entry.strip())
    return entries


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.dirname(here), help="the source tree")
    parser.add_argument("--exceptions", default=None,
                        help="pending exceptions (default: ROOT/tools/size_exceptions.txt)")
    args = parser.parse_args(argv)
    exceptions_path = args.exceptions or os.path.join(args.root, "tools", "size_exceptions.txt")
    try:
        exceptions = read_exceptions(exceptions_path)
    except ValueError as e:
        sys.stderr.write(f"check_sizes: {e}\n")
        return 2

    files = source_files(args.root)
    if not files:
        sys.stderr.write(f"check_sizes: no sources under {args.root}\n")
        return 2
    reported, excepted, used = [], 0, set()
    for rel in files:
        for _, key, message in violations_in(args.root, rel):
            if key in exceptions:
                excepted += 1
                used.add(key)
            else:
                reported.append(message)
    for message in reported:
        print(message)
    for stale in sorted(exceptions - used):
        print(f"check_sizes: note: exception no longer needed: {stale}", file=sys.stderr)
    print(f"check_sizes: {len(files)} files, {len(reported)} violations, "
          f"{excepted} pending exceptions", file=sys.stderr)
    return 1 if reported else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
