"""A consortium chain on this machine: one geth Clique validator per founding institution.

    consortium.py  the consortium file (institutions, roles, admins, threshold) and the keys it needs
    genesis.py     the Clique genesis: signers in extraData, London EVM, pre-funded members
    daemon.py      what every node process shares: started detached, waited for, stopped or frozen by PID
    geth.py        one geth validator: init, static peers, its command line
    kubo.py        one Kubo (IPFS) node of the private swarm (``--ipfs``): init with the swarm key, its API
    gateways.py    one institution's gateway (``--gateways``): ``hcl gateway serve`` on its registered endpoint
    network.py     the network: up (create, start, peer, seal, deploy, onboard, gateways), status, down, a new
                   validator

``hcl network …`` (:mod:`node_client.network_cli`) is the command line over :class:`Network`.
"""

from node_client.network.consortium import Consortium, Institution
from node_client.network.network import DEFAULT_FOLDER, GatewayStatus, Network, NodeStatus

__all__ = ["DEFAULT_FOLDER", "Consortium", "GatewayStatus", "Institution", "Network", "NodeStatus"]
