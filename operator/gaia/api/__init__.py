"""The HTTP API of SPEC.md, one implementation for the standalone server and the operator."""
