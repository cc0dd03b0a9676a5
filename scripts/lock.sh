#!/usr/bin/env bash
# Writes the locks that scripts/setup.sh installs from: every package at the exact version
# tested, with the hashes of its files (pip installs nothing else, nothing altered).
#
#   bash scripts/lock.sh                     # re-lock: new dependencies only, pins kept
#   bash scripts/lock.sh --upgrade           # every package to its newest allowed version
#   bash scripts/lock.sh --upgrade-package jax --upgrade-package jaxlib
#
# Then run the tests (bash .ci/run) before committing the new locks. Needs uv (installed
# into the project's venv if it is not on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  VENV=${AEJAX_VENV:-.venv}
  "$VENV/bin/python" -m pip install -q uv
  UV="$VENV/bin/uv"
fi
# --universal: one lock for every OS and CPU (markers choose per platform).
for name in main dev; do
  extra=(); [ "$name" = dev ] && extra=(--extra dev)
  "$UV" pip compile pyproject.toml "${extra[@]}" --universal --python-version 3.11 \
    --generate-hashes --quiet --custom-compile-command "bash scripts/lock.sh" \
    --override requirements/overrides.txt \
    -o "requirements/$name.lock" "$@"
done
echo "wrote requirements/main.lock and requirements/dev.lock"
