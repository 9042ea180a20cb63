"""The embedded cluster: ``python -m programs.cluster`` runs nats-server, every
service and the gateway on one machine, supervised, under one data dir."""
