#!/opt/venv/bin/python
"""MinIO stand-in: `minio server DIR [--console-address ADDR]` serves moto's S3 API on 0.0.0.0:9000.

The objects live in memory (DIR is accepted and not used); any credentials are accepted.
"""

import signal
import sys

from moto.server import main

if len(sys.argv) < 2 or sys.argv[1] != "server":
    sys.exit(f"minio stand-in: only `minio server DIR` is supported, not {sys.argv[1:]}")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default SIGTERM action
main(["-H", "0.0.0.0", "-p", "9000"])
