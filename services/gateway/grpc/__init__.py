"""The gateway's gRPC front: one servicer module per Pachyderm API."""
