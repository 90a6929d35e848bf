"""Entry point of an engine's child process: vLLM's own OpenAI server, tied to its parent.

`python -m deploy.engine_process --parent-pid PID -- <vLLM server arguments>`

The Serve replica that starts the engine can die without warning (Ray ends actors with
SIGKILL), and a vLLM server left behind would hold cores and memory with nobody to stop it.
A watchdog thread here sends this process SIGTERM once the parent is gone, which runs vLLM's
own shutdown (it stops its engine-core processes too).

Under vLLM's Ray executor the replica names its placement group in `TANDEM_PLACEMENT_GROUP`,
and this process attaches that group to the engine's config as it is built, as Ray Serve LLM
does in-process (`vllm_config.parallel_config.placement_group`): the config travels to vLLM's
engine-core process, whose executor then puts one worker in each of the group's bundles rather
than creating a group of its own (a child process is not "in" its parent actor's group).
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import threading
import time

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
PLACEMENT_GROUP_ENV = "TANDEM_PLACEMENT_GROUP"


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(15)  # vLLM's graceful shutdown; past that, go
            os._exit(1)


def attach_placement_group(group_hex: str) -> None:
    """Make every engine config this process builds carry the placement group `group_hex`."""
    from ray import PlacementGroupID
    from ray.util.placement_group import PlacementGroup
    from vllm.engine.arg_utils import EngineArgs

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex)))
    build = EngineArgs.create_engine_config

    def create_engine_config(self: EngineArgs, *args: object, **kwargs: object) -> object:
        config = build(self, *args, **kwargs)
        config.parallel_config.placement_group = group
        return config

    EngineArgs.create_engine_config = create_engine_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True, name="parent-watchdog").start()
    server_args = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args
    group_hex = os.environ.get(PLACEMENT_GROUP_ENV)
    if group_hex:
        attach_placement_group(group_hex)
    sys.argv = [VLLM_SERVER_MODULE, *server_args]
    runpy.run_module(VLLM_SERVER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
