"""The image's HEALTHCHECK: exit 0 when /health/live answers 200 on $PORT."""

import os
import sys
import urllib.request

try:
    port = os.environ.get("PORT", "8000")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception:
    sys.exit(1)
