# Creates .venv with Python 3.11+ and installs the project into it (with the extras named in $1).
install_venv() {
  local extras="$1"
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Python 3.11 or newer is needed (found: $("$python" --version 2>&1))" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$python" -m venv .venv
  fi
  echo "== installing the project${extras:+ with $extras}"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}" 2>&1 | grep -v -E "^(WARNING|  )" || true
  .venv/bin/python -c "import alacop" || { echo "installing the project failed" >&2; exit 1; }
}
