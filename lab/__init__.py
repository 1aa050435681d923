"""A lab of many hosts on Ray (docs/lab.md): where devices are (placement), joining a cluster,
the agents on lab hosts and the coordinator's proxies to them, `harness lab-host`. Nothing here
imports Ray at import time; only a sweep with a device on a lab host, or a lab-host command, does."""
