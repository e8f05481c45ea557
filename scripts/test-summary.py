#!/usr/bin/env python3
"""Sum up meson's test logs of several build dirs into one closing line:
'N passed, N failed, N skipped'. Exits 1 if anything failed or nothing ran."""
import json
import sys

passed = failed = skipped = 0
for build in sys.argv[1:]:
    try:
        lines = open(f"{build}/meson-logs/testlog.json").read().splitlines()
    except OSError as e:
        print(f"test-summary: {build}: {e.strerror}", file=sys.stderr)
        failed += 1
        continue
    for line in lines:
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
            print(f"test-summary: {build}: {json.loads(line)['name']}: {r}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or not passed else 0)
