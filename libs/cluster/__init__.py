"""The embedded cluster: ``python -m libs.cluster`` runs nats-server, every
service and the gateway on one machine, supervised, under one data dir."""
