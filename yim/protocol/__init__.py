"""The wire protocol: typed frames, their codecs and the stable error codes (no I/O here)."""
