"""`tuner probe-link`: measure the link between two nodes and write a hardware profile from it."""
