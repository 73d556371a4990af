#!/usr/bin/env bash
# Usage: ./run.sh TARGET [SECONDS] [libFuzzer flags...]
# Runs one fuzz target for SECONDS (default 600) on the stable toolchain, niced, one job,
# new inputs kept in corpus/TARGET, seeds read from seeds/TARGET. Extra flags come last,
# so they override the defaults (e.g. -timeout=30). See docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")"
target=$1
secs=${2:-600}
mkdir -p "corpus/$target" "artifacts/$target"
RUSTC_BOOTSTRAP=1 exec nice -n 19 cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
  -artifact_prefix="artifacts/$target/" -print_final_stats=1 "${@:3}"
