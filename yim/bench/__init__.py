"""``yim bench``: drive a node over the real protocol and measure it (docs/performance.md).

- :mod:`yim.bench.cli` — the ``yim bench`` command, output (JSON lines or a table), medians;
- :mod:`yim.bench.runner` — one run: server, load-generator processes, barriers, psutil;
- :mod:`yim.bench.scenarios` — ``pairs``, ``idle``, ``sync`` (and later ``group`` …);
- :mod:`yim.bench.client` — the lean raw-aiohttp client the load generator uses;
- :mod:`yim.bench.relay` — the bare relay that ``--baseline`` measures;
- :mod:`yim.bench.plot` — dependency-free SVG charts for ``--plot DIR``.
"""
