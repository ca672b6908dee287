#!/usr/bin/env python3
"""Atomic read-modify-writes per request, from a callgrind profile taken with --dump-instr=yes.

    bench/atomics.py CALLGRIND_OUT REQUESTS [TOP]

Each `lock`-prefixed instruction (and `xchg` with memory, which is locked implicitly) costs
some 20 cycles even uncontended: it drains the store buffer. callgrind counts instructions, not
cycles, so these are invisible in its totals; this script multiplies callgrind's per-instruction
execution counts with objdump's disassembly of every object in the profile and prints the locked
instructions executed per request, by function. Used by `bench/callgrind.sh --atomics`.
"""
import collections
import re
import subprocess
import sys


def main():
    path, nreq = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    counts = collections.defaultdict(int)  # (object, address) -> executions
    fn_of = {}
    ob = fn = None
    skip = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ob="):
                ob = line[3:]
            elif line.startswith("fn="):
                fn = line[3:]
            elif line.startswith("calls="):
                skip = True  # the next cost line is the call's inclusive cost
            elif line.startswith("0x"):
                if skip:
                    skip = False
                    continue
                parts = line.split()
                addr = int(parts[0], 16)
                counts[(ob, addr)] += int(parts[2]) if len(parts) > 2 else 0
                fn_of[(ob, addr)] = fn
    per_fn = collections.defaultdict(int)
    total = 0
    for obj in {k[0] for k in counts}:
        if not obj or not obj.startswith("/"):
            continue
        asm = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True
        ).stdout
        locked = set()
        for l in asm.split("\n"):
            m = re.match(r"\s*([0-9a-f]+):\s+(.*)$", l)
            if not m:
                continue
            ins = m.group(2)
            if ins.startswith("lock ") or (ins.startswith("xchg") and "(" in ins):
                locked.add(int(m.group(1), 16))
        for (o, a), c in counts.items():
            if o == obj and a in locked:
                per_fn[fn_of[(o, a)]] += c
                total += c
    print("atomic read-modify-writes per request: %.1f" % (total / nreq))
    for name, c in sorted(per_fn.items(), key=lambda x: -x[1])[:top]:
        if c / nreq >= 0.05:
            print("%7.2f  %s" % (c / nreq, name[:140]))


if __name__ == "__main__":
    main()
