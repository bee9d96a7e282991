"""The gateway's exact-match response cache: pure decisions, no I/O.

    rules.py     which scope has the cache on (workspace, feature or key), TTL, partition, opt-ins
    controls.py  per-request controls (Meterline-Cache, Cache-Control) and the eligibility rules
    key.py       the canonical key: SHA-256 over canonical JSON, always scoped to the workspace
    entry.py     what is stored (the endpoint's non-streamed answer + usage), zlib, the size limit
    collect.py   a streamed answer (as the client saw it) -> the non-streamed answer it stands for
    replay.py    a stored answer -> the endpoint's native SSE, in several chunks

The stage that uses them is `meterline.gateway.caching`; the table is `meterline.store.cache`.

    semantic.py  semantic dedup (lever 6): scope, LSH buckets, cosine, guards; its stage is
                 `meterline.gateway.semantic`, its table `meterline.store.semantic`
"""
