# Sourced by the bin/ scripts: make sure .venv/ at the repository root holds zcounter
# (editable) and its dependencies, creating it on first use.  Needs only python3 >= 3.10.
# Every package comes at the version pinned in requirements/ci.txt (issue 18: a new release
# of a dependency must not change what a fresh clone runs); `bin/test --latest` sets
# ZCOUNTER_VENV and ZCOUNTER_PIP_CONSTRAINT to install the newest releases elsewhere.
# setuptools is named so that the copy `python -m venv` seeds on 3.10/3.11 is brought to
# the pinned version too (.ci/check_pins.py checks every environment against the lock).
set -euo pipefail
ZC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZC_VENV="${ZCOUNTER_VENV:-$ZC_ROOT/.venv}"
ZC_LOCK="$ZC_ROOT/requirements/ci.txt"
zc_bootstrap() {
    local extras="${1:-}"
    local stamp="$ZC_VENV/.zcounter-installed${extras:+-$extras}"
    if [[ -f "$stamp" && "$stamp" -nt "$ZC_ROOT/pyproject.toml" && "$stamp" -nt "$ZC_LOCK" ]]; then
        return 0
    fi
    # Every install includes zcounter and its own dependencies, so a fresh stamp of any
    # extras (bin/test's "dev") also serves a script that needs no extras: bin/cluster then
    # starts without pip, also where no network is (a test runs it in a namespace).
    if [[ -z "$extras" ]]; then
        local any
        for any in "$ZC_VENV"/.zcounter-installed*; do
            if [[ -f "$any" && "$any" -nt "$ZC_ROOT/pyproject.toml" && "$any" -nt "$ZC_LOCK" ]]; then
                return 0
            fi
        done
    fi
    local py="${ZCOUNTER_PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "error: zcounter needs Python 3.10 or newer as '$py' (set ZCOUNTER_PYTHON)" >&2
        exit 2
    fi
    mkdir -p "$ZC_VENV"
    # One installer at a time (bin/cluster and a client may start together).
    exec 9>"$ZC_VENV/.lock"
    flock 9
    if [[ ! -f "$stamp" || "$ZC_ROOT/pyproject.toml" -nt "$stamp" || "$ZC_LOCK" -nt "$stamp" ]]; then
        echo "zcounter: setting up $ZC_VENV (first run)..." >&2
        [[ -x "$ZC_VENV/bin/python" ]] || "$py" -m venv "$ZC_VENV"
        PIP_CONSTRAINT="${ZCOUNTER_PIP_CONSTRAINT:-$ZC_LOCK}" \
            "$ZC_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e "$ZC_ROOT${extras:+[$extras]}" setuptools >&2
        touch "$stamp"
    fi
    flock -u 9
}
