#!/usr/bin/env python3
"""Longest functions of C++ files, and a check that none exceeds a limit.

    function_length.py --max 80 FILE...    exit 1 naming every function longer than 80 lines
    function_length.py FILE...             print each function's length, longest first

A function is a brace block opened at namespace or class scope after a parameter list
(lambdas and blocks inside a function count towards it). Comments, string literals and
preprocessor lines are skipped, which is all the parsing ember's sources need.
"""
import argparse
import re
import sys


def strip(text):
    """The source with comments, strings and character literals blanked (newlines kept)."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return pattern.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text)


def functions(path):
    text = strip(open(path, encoding="utf-8").read())
    text = "\n".join("" if line.lstrip().startswith("#") else line for line in text.split("\n"))
    stack = []  # (kind, name, start line)
    header_start = 0
    found = []
    line = 1
    for i, c in enumerate(text):
        if c == "\n":
            line += 1
        elif c in ";}":
            if c == "}" and stack:
                kind, name, start = stack.pop()
                if kind == "function":
                    found.append((line - start + 1, name, start))
            header_start = i + 1
        elif c == "{":
            header = text[header_start:i]
            enclosing = stack[-1][0] if stack else "namespace"
            if re.search(r"\bnamespace\b", header) or "extern" in header and '"' in text[header_start:i]:
                kind = "namespace"
            elif re.search(r"\b(struct|class|union|enum)\b", header) and "(" not in header:
                kind = "class"
            elif enclosing in ("namespace", "class") and ")" in header:
                kind = "function"
            else:
                kind = "other"
            name = " ".join(header.split())[-90:] if kind == "function" else ""
            stack.append((kind, name, line))
            header_start = i + 1
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max", type=int, default=0, help="fail on functions longer than this many lines")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    failures = 0
    for path in args.files:
        for length, name, start in sorted(functions(path), reverse=True):
            if args.max and length > args.max:
                print(f"{path}:{start}: {length} lines (limit {args.max}): {name}")
                failures += 1
            elif not args.max:
                print(f"{length:5d}  {path}:{start}  {name}")
    if args.max:
        longest = max((f for p in args.files for f in functions(p)), default=(0, "", 0))
        print(f"longest function: {longest[0]} lines ({longest[1]})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
