"""Entry point of an engine's child process: the engine's own OpenAI server, tied to its parent.

`python -m deploy.engine_process --parent-pid PID [--engine vllm] -- <server arguments>`
(the engine adapter, gateway.engines, names the server module and spells its arguments)

The Serve replica that starts the engine can die without warning (Ray ends actors with
SIGKILL), and a vLLM server left behind would hold cores and memory with nobody to stop it.
A watchdog thread here sends this process SIGTERM once the parent is gone, which runs vLLM's
own shutdown (it stops its engine-core processes too).

Under the Ray executor the replica names its placement group in `TANDEM_PLACEMENT_GROUP`, and
this process has the engine adapter attach that group before the server starts (vLLM's: to the
engine's config as it is built, as Ray Serve LLM does in-process), since a child process is not
"in" its parent actor's group.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import threading
import time

from gateway.engines import DEFAULT_ENGINE, engine_adapter

PLACEMENT_GROUP_ENV = "TANDEM_PLACEMENT_GROUP"


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(15)  # vLLM's graceful shutdown; past that, go
            os._exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--engine", default=DEFAULT_ENGINE, help="the engine adapter (gateway.engines)")
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True, name="parent-watchdog").start()
    server_args = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args
    engine = engine_adapter(args.engine)
    group_hex = os.environ.get(PLACEMENT_GROUP_ENV)
    if group_hex:
        engine.attach_placement_group(group_hex)
    sys.argv = [engine.server_module, *server_args]
    runpy.run_module(engine.server_module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
