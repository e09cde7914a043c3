#!/usr/bin/env bash
# Mutation run over the engine-free modules (mutmut 3, configured in pyproject.toml [tool.mutmut]).
#
#   bash scripts/mutation.sh                 # every group, one after another
#   bash scripts/mutation.sh plan scheduler  # only these groups
#   MUTATION_MUTANTS='modelctl.safe_yaml.*' bash scripts/mutation.sh compose_import  # one module of a group
#
# Each group (pyproject [tool.mutmut.groups]) runs in its own scratch copy of the work tree under
# $MUTATION_DIR (default /tmp/modelctl-mutation), never in the checkout: mutmut writes mutants/
# beside the sources. Only the group's modules are mutated and each mutant runs only the group's
# tests that reach the mutated function, one process at a time (MUTATION_CHILDREN, default 1).
# Engine and GPU tests never run. The summary is printed per module at the end and kept in
# $MUTATION_DIR/summary.txt; survivors are listed in $MUTATION_DIR/<group>/survivors.txt
# (`cd $MUTATION_DIR/<group> && mutmut show NAME` shows one).
# Scores count killed and timed-out mutants over all mutants of the module ("no tests": survived).
# Not part of .ci/run: a full run takes tens of minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${MUTATION_DIR:-/tmp/modelctl-mutation}
CHILDREN=${MUTATION_CHILDREN:-1}

# The scores in the README were measured with mutmut 3.8.1 (another version mutates differently).
python3 -c 'import mutmut' 2>/dev/null || {
    echo "mutmut is not installed: python3 -m pip install 'mutmut==3.8.1'" >&2
    exit 2
}
mapfile -t ALL < <(python3 -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["groups"]))')
SELECTED=("$@")
[ ${#SELECTED[@]} -gt 0 ] || SELECTED=("${ALL[@]}")
for g in "${SELECTED[@]}"; do
    printf '%s\n' "${ALL[@]}" | grep -qx "$g" || { echo "unknown group: $g (one of: ${ALL[*]})" >&2; exit 2; }
done

mkdir -p "$OUT"
for g in "${SELECTED[@]}"; do
    dir="$OUT/$g"
    rm -rf "$dir"
    mkdir -p "$dir"
    # The work tree as it is (tracked and untracked files, not the ignored ones), without .git.
    git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
        | tar --null -T - -cf - | tar -xf - -C "$dir"
    # The group's modules and tests go into the copy's [tool.mutmut] table.
    python3 - "$dir/pyproject.toml" "$g" <<'PY'
import json, sys, tomllib
path, group = sys.argv[1], sys.argv[2]
text = open(path).read()
spec = tomllib.loads(text)["tool"]["mutmut"]["groups"][group]
lines = [f"only_mutate = {json.dumps(spec['mutate'])}",
         f"pytest_add_cli_args_test_selection = {json.dumps(spec['tests'])}"]
text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + "\n".join(lines) + "\n", 1)
tomllib.loads(text)
open(path, "w").write(text)
PY
    echo "== $g: mutating $(python3 -c 'import sys,tomllib; print(" ".join(tomllib.load(open(sys.argv[1],"rb"))["tool"]["mutmut"]["only_mutate"]))' "$dir/pyproject.toml")"
    (
        cd "$dir"
        unset DOCKER_HOST MODELCTL_REQUIRE_ENGINE
        start=$(date +%s)
        # shellcheck disable=SC2086 # MUTATION_MUTANTS: mutmut's name globs, split on spaces
        mutmut run --max-children "$CHILDREN" ${MUTATION_MUTANTS:-} >run.log 2>&1 || { tail -40 run.log >&2; exit 1; }
        mutmut results --all true >results.txt 2>/dev/null
        grep -v -E ': (killed|timeout|not checked)$' results.txt | sed 's/^ *//' >survivors.txt || true
        echo "   $(( $(date +%s) - start )) s; survivors: $dir/survivors.txt"
    )
done

python3 - "$OUT" "${SELECTED[@]}" <<'PY' | tee "$OUT/summary.txt"
import collections, sys, tomllib
out, groups = sys.argv[1], sys.argv[2:]
spec = tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["groups"]
print(f"{'module':32} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} {'no tests':>8} {'score':>6}")
for group in groups:
    files = spec[group]["mutate"]
    counts = {f: collections.Counter() for f in files}
    for line in open(f"{out}/{group}/results.txt"):
        if ":" not in line:
            continue
        name, status = line.strip().rsplit(": ", 1)
        if status == "not checked":  # left out by MUTATION_MUTANTS
            continue
        module = name.split(".x_")[0].split(".xǁ")[0]
        path = module.replace(".", "/") + ".py"
        if path not in counts:
            path = module.replace(".", "/") + "/__init__.py"
        counts.setdefault(path, collections.Counter())[status] += 1
    for path, c in counts.items():
        total = sum(c.values())
        if not total:
            continue
        killed = c["killed"] + c["timeout"]
        score = f"{100 * killed / total:.0f}%" if total else "-"
        print(f"{path:32} {total:7} {c['killed']:6} {c['timeout']:7} {c['survived']:8} {c['no tests']:8} {score:>6}")
PY
