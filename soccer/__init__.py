"""The soccer service: streams match video over gRPC."""
