# Sourced by ./run and ./test: make sure .venv exists with the project installed.
# Needs only Python 3.11+ on PATH; picks 3.12 or 3.11 first because the embedded PostgreSQL
# wheel (pgserver) exists up to 3.12.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
  py=""
  for cand in python3.12 python3.11 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      py="$cand"; break
    fi
  done
  if [ -z "$py" ]; then
    echo "telemetry-bridge needs Python 3.11 or newer on PATH" >&2
    exit 1
  fi
  echo "creating .venv with $("$py" --version)" >&2
  "$py" -m venv .venv
fi
# Reinstall when pyproject.toml changed since the last install.
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "installing telemetry-bridge and its test tools into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch .venv/.installed
fi
