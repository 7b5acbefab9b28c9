"""An OTLP/gRPC trace collector that keeps nothing: the bench's servers export to it, so that
tracing costs what it costs with a real collector, without one to install.

`python -m bench.otlp_sink` prints {"message": "listening", "port": N} and counts the spans
it is sent (logged every 10 s while any arrive).
"""

import asyncio
import json

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
        ],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            self.spans += sum(len(scope.spans) for scope in resource.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve() -> int:
    sink = Sink()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"message": "listening", "port": port}), flush=True)
    reported = 0
    while True:
        await asyncio.sleep(10)
        if sink.spans != reported:
            reported = sink.spans
            print(json.dumps({"message": "spans", "spans": reported}), flush=True)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(serve()))
