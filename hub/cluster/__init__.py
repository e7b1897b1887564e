"""Hub workers sharing one site through one broker and one PostgreSQL (`etp hub --worker`)."""

from hub.cluster.membership import LEADER, Cluster, ClusterConfig, owner_of
from hub.cluster.shares import AggregatorShares

__all__ = ["LEADER", "AggregatorShares", "Cluster", "ClusterConfig", "owner_of"]
