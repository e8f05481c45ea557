#!/usr/bin/env bash
# The demo `make run` shows: what vtool can do today, on its embedded defaults.
set -euo pipefail
vtool=${1:-build/cli/vtool}
echo "\$ vtool --help"
"$vtool" --help
