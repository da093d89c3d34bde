"""Layer 3: the HTTP gateways: JSON-RPC 2.0, XML-RPC, the REST call endpoint
and its OpenAPI document."""
