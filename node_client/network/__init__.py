"""A consortium chain on this machine: one geth Clique validator per founding institution.

    consortium.py  the consortium file (institutions, roles, admins, threshold) and the keys it needs
    genesis.py     the Clique genesis: signers in extraData, London EVM, pre-funded members
    geth.py        one geth node: init, static peers, start detached, stop by PID
    network.py     the network: up (create, start, agree, deploy, onboard), status, down, a new validator

``hcl network …`` (:mod:`node_client.network_cli`) is the command line over :class:`Network`.
"""

from node_client.network.consortium import Consortium, Institution
from node_client.network.network import DEFAULT_FOLDER, Network, NodeStatus

__all__ = ["DEFAULT_FOLDER", "Consortium", "Institution", "Network", "NodeStatus"]
