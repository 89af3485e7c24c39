"""Routes, one folder per API version; health probes sit at the root."""
