# Sourced by the bin/ scripts: make sure .venv/ at the repository root holds zcounter
# (editable) and its dependencies, creating it on first use.  Needs only python3 >= 3.10.
set -euo pipefail
ZC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZC_VENV="$ZC_ROOT/.venv"
zc_bootstrap() {
    local extras="${1:-}"
    local stamp="$ZC_VENV/.zcounter-installed${extras:+-$extras}"
    if [[ -f "$stamp" && "$stamp" -nt "$ZC_ROOT/pyproject.toml" ]]; then
        return 0
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
    if [[ ! -f "$stamp" || "$ZC_ROOT/pyproject.toml" -nt "$stamp" ]]; then
        echo "zcounter: setting up $ZC_VENV (first run)..." >&2
        [[ -x "$ZC_VENV/bin/python" ]] || "$py" -m venv "$ZC_VENV"
        "$ZC_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e "$ZC_ROOT${extras:+[$extras]}" >&2
        touch "$stamp"
    fi
    flock -u 9
}
