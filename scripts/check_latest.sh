#!/usr/bin/env bash
# The newest releases that pyproject.toml allows: a throwaway venv with them, the unit tests run in it, and what
# moved against constraints.txt and what broke, ending in one SUMMARY line.
# Exit 0: the tests pass; 1: a test failed (or none ran); 2: the newest releases did not install.
#
#   scripts/check_latest.sh                       # every unit test: pytest -m "not integration"
#   scripts/check_latest.sh tests/test_muon.py    # arguments go to pytest, after -m "not integration"
#   TORCH=torch scripts/check_latest.sh           # let torch move too: by default it is held at the README's
#                                                 # torch==X (the newest torch on PyPI is a multi-GB CUDA build)
#   PYTHON=python3.12 KEEP_VENV=1 scripts/check_latest.sh
#
# Green here and in the full suite? Refresh the pins: README.md says how (scripts/pin_versions.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${TORCH:-$(grep -o 'torch==[0-9][0-9A-Za-z.]*' README.md | head -1)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check_latest.XXXXXX")
VENV=$WORK/venv
VPY=$VENV/bin/python
cleanup() {
    if [ "${KEEP_VENV:-0}" = 1 ]; then echo "check_latest: venv and logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "check_latest: a fresh venv ($("$PY" --version 2>&1)) with the newest releases pyproject.toml allows; torch: ${TORCH:-newest}"
"$PY" -m pip config list 2>/dev/null | grep -i 'constraint' | sed 's/^/check_latest: note, this machine'"'"'s pip config adds: /'
"$PY" -m venv "$VENV" || { echo "check_latest: SUMMARY could not make a venv with $PY"; exit 2; }
if ! "$VPY" -m pip install -U --upgrade-strategy eager ${TORCH:+"$TORCH"} -e ".[dev]" >"$WORK/install.log" 2>&1; then
    tail -25 "$WORK/install.log"
    echo "check_latest: SUMMARY install FAILED: the newest releases pyproject.toml allows do not resolve or install (above)"
    exit 2
fi

# What moved: the same closure pin_versions.py writes, read from the new venv, against constraints.txt.
"$VPY" scripts/pin_versions.py --any-torch -o "$WORK/latest.txt" 2>/dev/null || {
    echo "check_latest: SUMMARY the new venv's dependency closure could not be read"; exit 2; }
echo
echo "What moved (constraints.txt -> newest allowed):"
MOVED=$("$VPY" - constraints.txt "$WORK/latest.txt" <<'EOF'
import sys
def read(path):
    pins = {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    return pins
old, new = read(sys.argv[1]), read(sys.argv[2])
moved = [n for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
added, gone = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
w = max([len(n) for n in moved + added + gone] + [1])
for n in moved:
    print(f"  {n:<{w}}  {old[n]} -> {new[n]}", file=sys.stderr)
for n in added:
    print(f"  {n:<{w}}  new: {new[n]}", file=sys.stderr)
for n in gone:
    print(f"  {n:<{w}}  gone (was {old[n]})", file=sys.stderr)
if not (moved or added or gone):
    print("  nothing: constraints.txt already holds the newest releases", file=sys.stderr)
print(f"{len(moved)} moved, {len(added)} new, {len(gone)} gone")
EOF
)
# pyproject's upper bounds, and the newest release each one keeps out
"$VPY" - <<'EOF' | while read -r name spec; do
import importlib.metadata as md
from packaging.requirements import Requirement
for line in md.requires("mamba-trainer") or []:
    r = Requirement(line)
    if any(s.operator in ("<", "<=", "~=", "==") for s in r.specifier) and (r.marker is None or r.marker.evaluate({"extra": "dev"})):
        print(r.name, str(r.specifier))
EOF
    newest=$("$VPY" -m pip index versions "$name" 2>/dev/null | head -1 | sed -n 's/.*(\(.*\)).*/\1/p')
    have=$("$VPY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)
    if [ -n "$newest" ] && [ "$newest" != "$have" ]; then
        echo "  held back by pyproject.toml: $name $spec (installed $have; newest on the index $newest)"
    fi
done

# What broke: the unit tests.
echo
echo "Unit tests: pytest -m \"not integration\"${*:+ $*}"
"$VPY" -m pytest -q -p no:cacheprovider -m "not integration" "$@" >"$WORK/pytest.log" 2>&1
rc=$?
tail -3 "$WORK/pytest.log"
echo
echo "What broke:"
if ! grep -E '^(FAILED|ERROR) ' "$WORK/pytest.log"; then
    [ "$rc" = 0 ] && echo "  nothing" || tail -20 "$WORK/pytest.log"
fi
last=$(grep -E '(passed|failed|error|no tests ran|deselected)' "$WORK/pytest.log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
if [ "$rc" = 0 ]; then verdict=PASS; code=0; else verdict=FAIL; code=1; fi
echo "check_latest: SUMMARY $verdict: ${MOVED:-?} vs constraints.txt; unit tests: ${last:-pytest exit $rc}"
[ "$code" = 0 ] || echo "check_latest: the pytest log: $WORK/pytest.log (KEEP_VENV=1 keeps it)"
exit "$code"
