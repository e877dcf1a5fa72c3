#!/usr/bin/env python3
"""Licences and duplicate versions of every crate in the resolved graph, offline.

What `cargo deny check licenses bans` would check, without its install (several minutes of
CI's 20 on two cores) and without the advisory database, which lives on GitHub, out of this
network's reach. Reads `cargo tree --locked`; exits 1 on a licence outside ALLOWED or a crate
in two versions that is not in .ci/duplicates.txt.
"""
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# Permissive licences; a crate qualifies when its SPDX expression can be satisfied with them.
ALLOWED = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Zlib", "Unlicense", "BSL-1.0", "Unicode-DFS-2016", "Unicode-3.0", "MPL-2.0",
    "CC0-1.0", "0BSD",
}
# Reviewed one by one: permissive, just not on the list.
EXCEPTIONS = {"WTFPL"}


def satisfiable(expression: str) -> bool:
    """SPDX with AND binding tighter than OR; the old `A/B` means `A OR B`."""
    text = expression.replace("/", " OR ")
    text = re.sub(r"\s+", " ", text).strip()

    def evaluate(tokens):
        # Recursive descent over: or := and ("OR" and)*; and := atom ("AND" atom)*
        def atom(i):
            if tokens[i] == "(":
                value, i = disjunction(i + 1)
                return value, i + 1  # past ")"
            name = tokens[i]
            i += 1
            if i < len(tokens) and tokens[i] == "WITH":
                name = f"{name} WITH {tokens[i + 1]}"
                i += 2
            return name in ALLOWED or name in EXCEPTIONS, i

        def conjunction(i):
            value, i = atom(i)
            while i < len(tokens) and tokens[i] == "AND":
                right, i = atom(i + 1)
                value = value and right
            return value, i

        def disjunction(i):
            value, i = conjunction(i)
            while i < len(tokens) and tokens[i] == "OR":
                right, i = conjunction(i + 1)
                value = value or right
            return value, i

        return disjunction(0)[0]

    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    return bool(tokens) and evaluate(tokens)


def packages(root: Path):
    """(name, version, licence) of every crate this platform builds, dev-dependencies
    included: `cargo tree`, which resolves features and targets as a build does (`cargo
    metadata`'s graph also lists crates no build here uses)."""
    out = subprocess.run(
        ["cargo", "tree", "--workspace", "--locked", "-e", "normal,build,dev",
         "--prefix", "none", "-f", "{p}|{l}"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    seen = set()
    for line in out.splitlines():
        line = line.removesuffix(" (*)").strip()
        if not line or line in seen:
            continue
        seen.add(line)
        package, _, licence = line.partition("|")
        name, version, *rest = package.split(" ")
        # Workspace members carry their path: `name v0.1.0 (/path)`.
        local = bool(rest) and rest[0].startswith("(/")
        yield name, version.removeprefix("v"), licence, local


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    failures = []
    versions = defaultdict(set)
    for name, version, licence, local in packages(root):
        if local:
            continue
        versions[name].add(version)
        if not licence or not satisfiable(licence):
            failures.append(f"licence: {name} {version}: {licence!r}")
    allowed_dups = {
        line.split("#")[0].strip()
        for line in (root / ".ci" / "duplicates.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    }
    duplicated = {name for name, vs in versions.items() if len(vs) > 1}
    for name in sorted(duplicated - allowed_dups):
        failures.append(
            f"duplicate: {name} in versions {', '.join(sorted(versions[name]))} "
            "(unify them, or add the crate to .ci/duplicates.txt with the reason)"
        )
    for name in sorted(allowed_dups - duplicated):
        print(f"note: {name} is no longer duplicated; remove it from .ci/duplicates.txt")
    for failure in failures:
        print(failure)
    print(f"deps: {sum(len(v) for v in versions.values())} crates checked, "
          f"{len(duplicated)} known duplicates, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
