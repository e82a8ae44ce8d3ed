"""Shared servicer helpers: authentication and precise error statuses."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging

import grpc

log = logging.getLogger("funnel.rpc")


class RpcAbort(Exception):
    """Raised from synchronous helpers to end a call with a precise status; the
    ``rpc`` decorator turns it into ``context.abort`` (a coroutine in grpc.aio)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def rpc(handler):
    """Wraps a servicer method: RpcAbort -> its status; any other error -> INTERNAL
    with a short message (logged with its traceback), never a hung call."""

    @functools.wraps(handler)
    async def wrapper(self, request, context):
        try:
            return await handler(self, request, context)
        except RpcAbort as exc:
            await context.abort(exc.code, exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("%s failed", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return wrapper


def _abort(context, code: grpc.StatusCode, message: str):
    raise RpcAbort(code, message)


def invalid(context, message: str):
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(context, message: str):
    _abort(context, grpc.StatusCode.NOT_FOUND, message)


def metadata(context) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def authenticate_tenant(app, snap, context):
    """The tenant runtime for x-tenant-id + x-api-key, or UNAUTHENTICATED. Unknown
    tenant and wrong key give the same answer (no tenant enumeration)."""
    md = metadata(context)
    tenant_id, api_key = md.get("x-tenant-id", ""), md.get("x-api-key", "")
    runtime = app.registry.get(snap, tenant_id) if tenant_id and len(tenant_id) <= 64 else None
    if runtime is None or not api_key or not runtime.config.check_key(api_key):
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid tenant or API key")
    return runtime


def authenticate_admin(app, context) -> None:
    given = metadata(context).get("x-admin-key", "")
    digest = hashlib.sha256(given.encode()).hexdigest()
    if not given or not app.admin_key_hash or not hmac.compare_digest(digest, app.admin_key_hash):
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid admin key")
