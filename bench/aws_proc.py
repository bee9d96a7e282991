"""The embedded AWS (moto, one request at a time) in its own process, for the benchmark.

Served by uvicorn's WSGI interface rather than werkzeug's development server: werkzeug closes every
connection (`Connection: close`), while AWS endpoints keep them alive, and a new TCP connection per
call would inflate the gateway's measured CPU with work it never does against DynamoDB.
"""

from __future__ import annotations

import sys

import uvicorn

from meterline.devenv import FAKE_CREDENTIALS, embedded_app

if __name__ == "__main__":
    import os

    os.environ.update(FAKE_CREDENTIALS)
    uvicorn.run(embedded_app(), host="127.0.0.1", port=int(sys.argv[1]), interface="wsgi", log_level="error",
                access_log=False)
