"""``yim bench``: drive a node over the real protocol and measure it (docs/performance.md).

- :mod:`yimbench.cli` — the ``yim bench`` command, output (JSON lines or a table), medians;
- :mod:`yimbench.runner` — one run: server, load-generator processes, barriers, psutil;
- :mod:`yimbench.scenarios` — ``pairs``, ``idle``, ``sync`` (and later ``group`` …);
- :mod:`yimbench.client` — the lean raw-aiohttp client the load generator uses;
- :mod:`yimbench.relay` — the bare relay that ``--baseline`` measures;
- :mod:`yimbench.plot` — dependency-free SVG charts for ``--plot DIR``.
"""
