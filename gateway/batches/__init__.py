"""The OpenAI Files and Batch APIs on Tandem's gateway (docs/batches.md).

- `objects`: the OpenAI object shapes (File, Batch, output lines) and the create request.
- `store`: SQLite state and the data directory's files; survives a SIGKILL.
- `validate`: an input file checked line by line, problems reported with their line number.
- `upload`: a multipart upload streamed to disk, refused as soon as it is over the limit.
- `dispatch`: one line sent through the gateway's own generation path as a batch-class request.
- `runner`: every unfinished batch driven to its end, resumed after a restart.
- `routes`: /v1/files and /v1/batches.
- `observe`: the batch gauges and counters in /metrics.
"""
