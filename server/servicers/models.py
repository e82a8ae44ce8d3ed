"""Admin RPCs of the model registry and deployments (mixed into AdminServicer).
Thin: parse and check the request, call server.models.registry / deploy, map to the
proto. Who did it: the request's ``actor``, else the ``x-actor`` metadata, else "admin"."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile

import grpc

from protos import funnel_pb2
from server.models.deploy import ALL_SURFACES, Deployer, DeployError, Deployment, Guardrails, read_all
from server.models.registry import KINDS, MAX_MODEL_BYTES, ModelRecord, ModelRegistry, ModelRejected
from server.servicers.common import RpcAbort, authenticate_admin, invalid, metadata, rpc

DEPLOY_STATUS = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "not_found": grpc.StatusCode.NOT_FOUND,
                 "precondition": grpc.StatusCode.FAILED_PRECONDITION}


def model_to_proto(tenant: str, record: ModelRecord, created: bool = False) -> funnel_pb2.ModelInfo:
    return funnel_pb2.ModelInfo(
        tenant_id=tenant, version=record.version, kind=record.kind, features=record.features,
        uploaded_by=record.uploaded_by, uploaded_at_s=record.uploaded_at, metrics_json=json.dumps(record.metrics),
        size_bytes=record.size, created=created)


def guardrails_to_proto(g: Guardrails) -> funnel_pb2.Guardrails:
    msg = funnel_pb2.Guardrails(min_requests=g.min_requests)
    for name in ("max_error_rate", "max_nan_rate", "max_p99_ms"):
        if getattr(g, name) is not None:
            setattr(msg, name, getattr(g, name))
    return msg


def guardrails_from_proto(msg: funnel_pb2.Guardrails) -> Guardrails:
    values = {name: getattr(msg, name) for name in ("max_error_rate", "max_nan_rate", "max_p99_ms")
              if msg.HasField(name)}
    if msg.HasField("min_requests"):
        values["min_requests"] = msg.min_requests
    return Guardrails(**values)


def deployment_to_proto(dep: Deployment) -> funnel_pb2.Deployment:
    msg = funnel_pb2.Deployment(tenant_id=dep.tenant, surface=dep.surface, kind=dep.kind, stable=dep.stable or "",
                                canary=dep.canary or "", canary_percent=dep.canary_percent,
                                guardrails=guardrails_to_proto(dep.guardrails))
    for h in dep.history or ():
        msg.history.append(funnel_pb2.DeployEvent(
            at_s=h["at"], action=h["action"], actor=h.get("actor", ""), reason=h.get("reason", ""),
            stable=h.get("stable") or "", canary=h.get("canary") or "", canary_percent=h.get("canary_percent", 0.0),
            dropped=h.get("dropped") or "", measured_json=json.dumps(h["measured"]) if "measured" in h else ""))
    return msg


MAX_INDEX_BYTES = 16 << 30


class ModelAdmin:
    """UploadModel, ListModels, DeployModel, RampModel, RollbackModel, ListDeployments, PublishIndex."""

    @rpc
    async def PublishIndex(self, request_iterator, context):
        """Streams the file to a temporary one under the data dir (never held in memory),
        then publishes it as ``funnel index publish`` does (indexes.ann.publish_index_file)."""
        from indexes.ann import INDEX_METRICS, publish_index_file  # loads usearch: only when used
        from server.app import UPLOADS_DIR

        authenticate_admin(self.app, context)
        data_dir = self.app.settings.data_dir
        first, size = None, 0
        uploads = os.path.join(data_dir, UPLOADS_DIR)
        os.makedirs(uploads, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="index-", suffix=".usearch", dir=uploads)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request_iterator:
                    if first is None:
                        first = chunk
                        if not first.tenant_id:
                            invalid(context, "tenant_id: required")
                        self._existing_tenant(context, first.tenant_id)
                        if first.kind not in INDEX_METRICS:
                            invalid(context, f"kind: {first.kind!r} is not one of {', '.join(INDEX_METRICS)}")
                    size += len(chunk.data)
                    if size > MAX_INDEX_BYTES:
                        raise RpcAbort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"data: the index is larger than the limit of {MAX_INDEX_BYTES} bytes")
                    f.write(chunk.data)
            if first is None:
                invalid(context, "no chunks: the first one carries tenant_id and kind")
            try:  # reads and copies the file: off the event loop
                pointer = await asyncio.to_thread(publish_index_file, self.app.store, data_dir, first.tenant_id,
                                                  first.kind, path)
            except ValueError as exc:
                invalid(context, str(exc))
        finally:
            os.unlink(path)
        self.app.registry.invalidate(first.tenant_id)  # this process at once; the others within refresh_s
        return funnel_pb2.IndexInfo(tenant_id=first.tenant_id, kind=first.kind, version=pointer["version"],
                                    count=pointer["count"], metric=pointer["metric"])

    def _models(self) -> ModelRegistry:
        return ModelRegistry(self.app.store, self.app.settings.data_dir)

    def _deployer(self) -> Deployer:
        return Deployer(self.app.store, self._models())

    @staticmethod
    def _actor(request, context) -> str:
        return request.actor or metadata(context).get("x-actor", "") or "admin"

    async def _deploy_call(self, context, fn, *args):
        if not args[0]:
            invalid(context, "tenant_id: required")
        try:
            dep = await asyncio.to_thread(fn, *args)
        except DeployError as exc:
            raise RpcAbort(DEPLOY_STATUS[exc.code], str(exc)) from None
        self.app.registry.invalidate(dep.tenant)  # this process at once; the others within refresh_s
        return deployment_to_proto(dep)

    @rpc
    async def UploadModel(self, request_iterator, context):
        authenticate_admin(self.app, context)
        first, parts, size = None, [], 0
        async for chunk in request_iterator:
            if first is None:
                first = chunk
            size += len(chunk.data)
            if size > MAX_MODEL_BYTES:
                raise RpcAbort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"data: the model is larger than the limit of {MAX_MODEL_BYTES} bytes")
            parts.append(chunk.data)
        if first is None:
            invalid(context, "no chunks: the first one carries tenant_id, kind and features")
        if not first.tenant_id:
            invalid(context, "tenant_id: required")
        self._existing_tenant(context, first.tenant_id)
        if first.kind not in KINDS:
            invalid(context, f"kind: {first.kind!r} is not one of {', '.join(KINDS)}")
        metrics = {}
        if first.metrics_json:
            try:
                metrics = json.loads(first.metrics_json)
            except json.JSONDecodeError as exc:
                invalid(context, f"metrics_json: not valid JSON ({exc.msg})")
            if not isinstance(metrics, dict):
                invalid(context, "metrics_json: must be a JSON object")
        if len(first.uploaded_by) > 256:
            invalid(context, "uploaded_by: longer than 256 characters")
        try:  # ONNX Runtime session + probe: off the event loop
            record, created = await asyncio.to_thread(
                self._models().register, first.tenant_id, first.kind, b"".join(parts), tuple(first.features),
                first.uploaded_by or metadata(context).get("x-actor", "") or "admin", metrics)
        except ModelRejected as exc:
            invalid(context, str(exc))
        return model_to_proto(first.tenant_id, record, created)

    @rpc
    async def ListModels(self, request, context):
        authenticate_admin(self.app, context)
        self._existing_tenant(context, request.tenant_id)
        if request.kind and request.kind not in KINDS:
            invalid(context, f"kind: {request.kind!r} is not one of {', '.join(KINDS)}")
        with self.app.store.snapshot() as snap:
            records = self._models().list(snap.txn, request.tenant_id, request.kind)
        return funnel_pb2.ModelList(models=[model_to_proto(request.tenant_id, r) for r in records])

    @rpc
    async def DeployModel(self, request, context):
        authenticate_admin(self.app, context)
        try:
            guardrails = guardrails_from_proto(request.guardrails)
        except TypeError:
            invalid(context, "guardrails: invalid")
        return await self._deploy_call(
            context, self._deployer().deploy, request.tenant_id, request.surface or ALL_SURFACES, request.kind,
            request.version, request.canary_percent, guardrails, self._actor(request, context), request.reason)

    @rpc
    async def RampModel(self, request, context):
        authenticate_admin(self.app, context)
        return await self._deploy_call(context, self._deployer().ramp, request.tenant_id,
                                       request.surface or ALL_SURFACES, request.kind, request.percent,
                                       self._actor(request, context), request.reason)

    @rpc
    async def RollbackModel(self, request, context):
        authenticate_admin(self.app, context)
        return await self._deploy_call(context, self._deployer().rollback, request.tenant_id,
                                       request.surface or ALL_SURFACES, request.kind,
                                       self._actor(request, context), request.reason)

    @rpc
    async def ListDeployments(self, request, context):
        authenticate_admin(self.app, context)
        if not request.tenant_id:
            invalid(context, "tenant_id: required")
        self._existing_tenant(context, request.tenant_id)
        with self.app.store.snapshot() as snap:
            deployments = read_all(self.app.store, snap.txn, request.tenant_id)
        return funnel_pb2.DeploymentList(deployments=[deployment_to_proto(d) for d in deployments])

