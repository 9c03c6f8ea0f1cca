"""Federation: the other institutions' gateways — where they are (the directory) and how this one asks them."""
