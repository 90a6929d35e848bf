"""How the gateway reaches a replica: over HTTP, to any OpenAI-compatible server (vLLM's own in a
deployed stack). `Backend` (see .base) is the interface the gateway's parts are written against."""
