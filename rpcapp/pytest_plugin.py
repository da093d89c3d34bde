"""Layer 3: rpcapp's pytest plugin (entry point ``pytest11``)."""
