#!/usr/bin/env python3
"""Checks the module structure of src/: no import cycle between modules, imports between layers
run one way only, and no file grows past a size without a stated reason.

    scripts/layers.py          # exits 1 and says what is wrong, if anything

A module is a file (`src/net/stream.rs` is `net::stream`, `src/op/mod.rs` is `op`). Every `crate::`
path in a file (in `use` items and in code) is an edge to the module that path names; `super::`
paths are resolved too. Doc comments and comments are ignored. The crate root (lib.rs) is left out:
it re-exports everything.

The layers, lowest first (DESIGN.md): a module may import from its own layer or a lower one. The
leaves (buffers, errors, endpoints) are below everything.
"""

import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Lowest first. Top-level modules not listed are features on top (framed, client, time, signal, net).
LAYERS = [
    {"buf", "error", "endpoint"},
    {"driver"},
    {"reactor"},
    {"op"},
    {"service"},
]
TOP = 100  # anything else

# Files allowed past MAX_LINES, with the reason.
MAX_LINES = 600
LONG_FILES = {}


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3]  # strip .rs
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts) if parts != ["lib"] else ""


def layer(module):
    top = module.split("::")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return TOP


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def expand(prefix, group):
    """The paths of a `use` group: `a::{b, c::{d, e}}` is a::b, a::c::d, a::c::e."""
    items, depth, cur = [], 0, ""
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        m = re.match(r"([\w:]*?)(?:::)?\{(.*)\}$", item, flags=re.S)
        if m:
            out += expand(prefix + [p for p in m.group(1).split("::") if p], m.group(2))
        else:
            path = item.split(" as ")[0].strip()
            out.append(prefix + [p for p in path.split("::") if p and p != "self"])
    return out


def paths_in(code):
    """Every `crate::` or `super::` path in the code, `use` groups expanded."""
    out = []
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)*)::\{", code):
        # The group runs to its matching brace.
        depth, i = 0, m.end() - 1
        while i < len(code):
            if code[i] == "{":
                depth += 1
            elif code[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out += expand(m.group(1).split("::"), code[m.end() : i])
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", code):
        out.append(m.group(1).split("::"))
    return out


def resolve(path, modules):
    """The longest module prefix of `path` (a list of segments)."""
    for n in range(len(path), 0, -1):
        name = "::".join(path[:n])
        if name in modules:
            return name
    return None


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(path)] = path
    modules = set(files)
    # Names the crate root re-exports (`crate::LocalHandle`), resolved to the modules that define
    # them, so that a path through the root counts as the import it is.
    reexports = {}
    root = strip_comments(open(files[""], encoding="utf-8").read())
    for m in re.finditer(r"pub use ([\w:]+)::(\{[^}]*\}|\w+);", root):
        base = [p for p in m.group(1).split("::") if p not in ("crate", "self")]
        names = m.group(2).strip("{}").split(",")
        for name in names:
            name = name.strip().split(" as ")[-1].strip()
            if name:
                target = resolve(base, modules)
                if target:
                    reexports[name] = target
    edges = defaultdict(set)
    problems = []
    for module, path in files.items():
        text = open(path, encoding="utf-8").read()
        lines = text.count("\n")
        if lines > MAX_LINES and module not in LONG_FILES:
            problems.append(f"{os.path.relpath(path, SRC)}: {lines} lines (more than {MAX_LINES})")
        if module == "":
            continue
        code = strip_comments(text)
        here = module.split("::")
        for segs in paths_in(code):
            if segs[0] == "crate":
                target = segs[1:]
            else:
                ups = 0
                while ups < len(segs) and segs[ups] == "super":
                    ups += 1
                target = here[: len(here) - ups] + segs[ups:]
            name = resolve(target, modules)
            if name is None and target and target[0] in reexports:
                name = reexports[target[0]]
            if name is None or name == module or name == "":
                continue
            edges[module].add(name)
    # Layering: no import from a higher layer, and never into the crate's feature tops from below.
    for src, dsts in edges.items():
        for dst in dsts:
            if layer(dst) > layer(src):
                problems.append(f"{src} imports {dst}: a higher layer")
    # Cycles between modules of different top-level directories, and between files.
    def cycles(graph):
        index, low, stack, on, out = {}, {}, [], set(), []
        counter = [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph.get(v, ()):
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
                    out.append(sorted(comp))

        sys.setrecursionlimit(10000)
        for v in list(graph):
            if v not in index:
                visit(v)
        return out

    # A parent module and its children naturally refer to each other (`mod x;` and `super::`):
    # those edges are not cycles of the design, so each file's edges to its ancestors are dropped.
    def is_ancestor(a, b):
        return b.startswith(a + "::")

    file_graph = {
        s: {d for d in ds if not is_ancestor(d, s) and not is_ancestor(s, d)}
        for s, ds in edges.items()
    }
    for comp in cycles(file_graph):
        problems.append("import cycle between files: " + " -> ".join(comp))
    top_graph = defaultdict(set)
    for s, ds in edges.items():
        for d in ds:
            a, b = s.split("::")[0], d.split("::")[0]
            if a != b:
                top_graph[a].add(b)
    for comp in cycles(top_graph):
        problems.append("import cycle between top-level modules: " + " -> ".join(comp))
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"{len(files)} modules: no import cycle, layers one way, no file over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
