#!/usr/bin/env python3
"""Checks the module graph of a Rust crate's source tree (default shared/src) for import cycles,
and that no domain's rules.rs or model.rs imports an adapter, the app or an ops module
(architecture §2). Edges are the `crate::…` and `super::…` paths a module names outside its
comments and its `mod tests`. Exit 1 on a cycle or a layering breach, listing them.
Usage: python3 infra/scripts/module-cycles.py [SRC_DIR]"""
import collections
import os
import re
import sys


def modules(root):
    mods = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith(".rs"):
                continue
            parts = os.path.relpath(os.path.join(dp, f), root)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                continue
            with open(os.path.join(dp, f), encoding="utf-8") as fh:
                mods["::".join(parts)] = fh.read()
    return mods


def edges(mods):
    def owner(path):
        segs = path.split("::")
        for i in range(len(segs), 0, -1):
            m = "::".join(segs[:i])
            if m in mods:
                return m
        return None

    out = set()
    for m, src in mods.items():
        src = re.sub(r"//[^\n]*", "", src)
        src = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", src, flags=re.S)
        refs = re.findall(r"crate::([a-z_]+(?:::[a-z_]+)*)", src)
        base = m.split("::")[:-1]
        for r in re.findall(r"\bsuper::([a-z_]+(?:::[a-z_]+)*)", src):
            refs.append("::".join(base + [r]))
        for group in re.findall(r"use super::\{([^}]*)\}", src):
            for x in group.split(","):
                x = x.strip().split("::")[0]
                if x and x[0].islower():
                    refs.append("::".join(base + [x]))
        for r in refs:
            t = owner(r)
            if t and t != m and not m.startswith(t + "::") and not t.startswith(m + "::"):
                out.add((m, t))
    return out


def cycles(mods, es):
    g = collections.defaultdict(set)
    for a, b in es:
        g[a].add(b)
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "shared/src"
    mods = modules(root)
    es = edges(mods)
    bad = 0
    for comp in cycles(mods, es):
        bad += 1
        print("import cycle:", " <-> ".join(comp))
        for a, b in sorted(es):
            if a in comp and b in comp:
                print(f"    {a} -> {b}")
    for a, b in sorted(es):
        pure = a.endswith("::rules") or a.endswith("::model")
        if pure and (b.startswith("adapters") or b == "app" or b.endswith("::ops")):
            bad += 1
            print(f"layering: {a} imports {b} (rules.rs and model.rs import no adapter, app or ops)")
    if bad:
        sys.exit(1)
    print(f"module graph of {root}: {len(mods)} modules, no import cycle, rules and models import no adapter")


if __name__ == "__main__":
    main()
