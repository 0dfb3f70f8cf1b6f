"""The gateway and bank servers: thin gRPC adapters over plain domain objects."""
