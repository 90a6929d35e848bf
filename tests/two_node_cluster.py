"""Two Ray nodes on this machine, as the two Sparks are two nodes: `python tests/two_node_cluster.py
--cpus N`. Prints `address=HOST:PORT` once both nodes are up, then holds them until SIGTERM or
SIGINT, when it stops both. The tests deploy onto it with `gateway deploy --address` exactly as a
team does on the boxes (docs/cluster.md); both nodes register on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import signal
import threading

from ray.cluster_utils import Cluster

from deploy.stack import ray_on_loopback_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs of each node")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ray_on_loopback_only()
    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": args.cpus}
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **loopback})
    try:
        cluster.add_node(**loopback)
        cluster.wait_for_nodes()
        print(f"address={cluster.address}", flush=True)
        stop.wait()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
