"""Authentication for gRPC on grpc.aio (the Go front-end process does the same in Go): a
server interceptor whose handlers check each call, ModelInfer with its request's model and
ModelStreamInfer with every message's, before the servicer sees it. Refusals end the call
with UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED (trailing metadata
`retry-after`), the message as REST's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio

from inferbridge.frontends.grpc.wrapping import WrappingInterceptor
from inferbridge.observability.logs import PRINCIPAL, PRINCIPAL_HEADER
from inferbridge.security.authority import REFUSAL, Authority, Credentials, Denial, Principal
from inferbridge.security.classify import classify_grpc
from inferbridge.security.scopes import Kind
from inferbridge.security.tls import grpc_peer_common_name

__all__ = ["AuthInterceptor"]

_Behavior = Callable[..., Any]
_Context = Any  # grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]


def _credentials(metadata: Iterable[tuple[str, Any]] | None, context: _Context) -> Credentials:
    authorization = api_key = repeated = ""
    for key, value in metadata or ():
        text = value if isinstance(value, str) else ""
        if key == "authorization":
            repeated = repeated or ("authorization metadata entry" if authorization else "")
            authorization = authorization or text
        elif key == "x-api-key":
            repeated = repeated or ("x-api-key metadata entry" if api_key else "")
            api_key = api_key or text
    return Credentials(authorization, api_key, grpc_peer_common_name(context), repeated)


class _PrincipalContext:
    """The call's context, whose invocation metadata says who the principal is as the Go
    front end's does (x-inferbridge-principal, a client's own removed), so that what reads
    it (a rollout routing by header) sees the same on both front ends."""

    __slots__ = ("_context", "_metadata")

    def __init__(self, context: _Context, metadata: tuple[tuple[str, Any], ...]) -> None:
        self._context = context
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _told(context: _Context, principal: str) -> _Context:
    metadata = tuple(context.invocation_metadata() or ())
    if not principal and all(key != PRINCIPAL_HEADER for key, _ in metadata):
        return context  # nothing to add or remove
    kept = tuple((key, value) for key, value in metadata if key != PRINCIPAL_HEADER)
    if principal:
        kept += ((PRINCIPAL_HEADER, principal),)
    return _PrincipalContext(context, kept)


async def _refuse(context: _Context, denial: Denial) -> NoReturn:
    PRINCIPAL.set(denial.principal)
    REFUSAL.set(denial.reason)
    if denial.retry_after is not None:
        context.set_trailing_metadata((("retry-after", str(denial.retry_after)),))
    await context.abort(denial.grpc_code, denial.message)
    raise AssertionError("context.abort returned")  # it raises AbortError


class AuthInterceptor(WrappingInterceptor):
    """Wraps every method's handler (once, cached) with `authority`'s check."""

    def __init__(self, authority: Authority, default_model: str) -> None:
        super().__init__()
        self._authority = authority
        self._default_model = default_model

    def _check(self, method: str, model: str, context: _Context) -> Principal | Denial:
        action = classify_grpc(method, model, self._default_model)
        credentials = _credentials(context.invocation_metadata(), context)
        return self._authority.check(credentials, action)

    def _wrap(self, method: str, handler: _Handler) -> _Handler:
        by_model = classify_grpc(method, "", self._default_model).kind is Kind.INFER
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, by_model), deserialize, serialize
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(method, handler.unary_stream, by_model), deserialize, serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._streamed(method, handler.stream_unary, by_model, returns_stream=False),
                deserialize,
                serialize,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._streamed(method, handler.stream_stream, by_model, returns_stream=True),
            deserialize,
            serialize,
        )

    def _unary(self, method: str, behavior: _Behavior, by_model: bool) -> _Behavior:
        async def checked(request: Any, context: _Context) -> Any:
            model = str(getattr(request, "model_name", "")) if by_model else ""
            answer = self._check(method, model, context)
            if isinstance(answer, Denial):
                await _refuse(context, answer)
            PRINCIPAL.set(answer.name)
            return await behavior(request, _told(context, answer.name))

        return checked

    def _unary_stream(self, method: str, behavior: _Behavior, by_model: bool) -> _Behavior:
        async def checked(request: Any, context: _Context) -> AsyncIterator[Any]:
            model = str(getattr(request, "model_name", "")) if by_model else ""
            answer = self._check(method, model, context)
            if isinstance(answer, Denial):
                await _refuse(context, answer)
            PRINCIPAL.set(answer.name)
            async for response in behavior(request, _told(context, answer.name)):
                yield response

        return checked

    def _streamed(
        self, method: str, behavior: _Behavior, by_model: bool, *, returns_stream: bool
    ) -> _Behavior:
        """A client-streaming or bidi call. The inference stream: its caller is
        authenticated when it opens (401 before any message), then every message is
        checked with its model; any other: checked once when it opens."""

        async def opened(requests: AsyncIterator[Any], context: _Context) -> AsyncIterator[Any]:
            credentials = _credentials(context.invocation_metadata(), context)
            if by_model:
                answer = self._authority.authenticate(credentials)
            else:
                answer = self._authority.check(credentials, classify_grpc(method, "", ""))
            if isinstance(answer, Denial):
                await _refuse(context, answer)
            PRINCIPAL.set(answer.name)
            return each_checked(requests, context, credentials) if by_model else requests

        async def each_checked(
            requests: AsyncIterator[Any], context: _Context, credentials: Credentials
        ) -> AsyncIterator[Any]:
            async for request in requests:
                model = str(getattr(request, "model_name", ""))
                action = classify_grpc(method, model, self._default_model)
                answer = self._authority.check(credentials, action)
                if isinstance(answer, Denial):
                    await _refuse(context, answer)  # ends the call with its code
                yield request

        if returns_stream:

            async def checked_stream(
                requests: AsyncIterator[Any], context: _Context
            ) -> AsyncIterator[Any]:
                checked = await opened(requests, context)
                async for response in behavior(checked, _told(context, PRINCIPAL.get())):
                    yield response

            return checked_stream

        async def checked_unary(requests: AsyncIterator[Any], context: _Context) -> Any:
            checked = await opened(requests, context)
            return await behavior(checked, _told(context, PRINCIPAL.get()))

        return checked_unary
