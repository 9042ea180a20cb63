"""The admin service: extract, restore, inspect-cluster and the cluster's state."""
