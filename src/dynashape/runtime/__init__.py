"""The generation runtime: the KV-cache loop, sampling and streaming."""
