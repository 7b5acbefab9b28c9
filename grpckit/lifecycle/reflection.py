"""Server reflection, v1 and v1alpha, from grpcio-reflection's one implementation.

grpcio-reflection 1.85 serves only `grpc.reflection.v1alpha.ServerReflection`
(grpc/grpc#38576); newer tools ask for `grpc.reflection.v1.ServerReflection` first, and some
never fall back. The two protocols have the same messages, field for field, so v1 is served
by the v1alpha servicer itself: each v1 request is re-read as v1alpha, each answer as v1.
The v1 types are generated from proto/grpc/reflection/v1 (`make proto`). Both services
list the same names and describe from the same descriptor pool.
"""

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from api.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from api.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc

V1_SERVICE_NAME = v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)


class _V1Servicer(v1_grpc.ServerReflectionServicer):
    def __init__(self, v1alpha: Any) -> None:
        self._v1alpha = v1alpha

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[v1_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[v1_pb2.ServerReflectionResponse]:
        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            async for request in request_iterator:
                yield reflection_pb2.ServerReflectionRequest.FromString(request.SerializeToString())

        async for response in self._v1alpha.ServerReflectionInfo(requests(), context):
            yield v1_pb2.ServerReflectionResponse.FromString(response.SerializeToString())


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Reflection v1 and v1alpha on `server`, listing `service_names` and both reflection
    services themselves."""
    names = [*service_names, *SERVICE_NAMES]
    # grpcio-reflection's asyncio servicer; its stubs omit the `aio` module.
    v1alpha = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(v1alpha, server)
    v1_grpc.add_ServerReflectionServicer_to_server(_V1Servicer(v1alpha), server)
