"""The service side: gRPC server, storage adapters, settings and the `pdl` command."""
