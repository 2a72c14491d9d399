"""Personal data ledger: the domain."""
