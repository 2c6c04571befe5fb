"""The HTTP front: URL routing, verbs, watch streams, logs, proxying, discovery, faults and recording."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml
from aiohttp import web

from .controllers import is_active, is_ready
from .defaults import encode_string_data
from .errors import ApiError, bad_request, not_found, status_body
from .faults import RecordedRequest
from .metadata import partial_metadata
from .patching import PATCH_TYPES
from .rbac import forbidden, request_attributes
from .resources import Resource, api_group_list, api_resource_list, group_versions, resource_at, resource_for
from .selectors import parse_field_selector, parse_label_selector, selector_from_spec
from .store import WatchEvent, matches
from .tables import to_table

if TYPE_CHECKING:
    from .sim import KubeSim

log = logging.getLogger(__name__)
PODS, PDBS, SERVICES = resource_for("Pod"), resource_for("PodDisruptionBudget"), resource_for("Service")
# In-cluster traffic to a Service (its DNS name), which bypasses the API server: see _network().
NETWORK_PREFIX = "/_network/"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
}
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    try:
        if "yaml" in content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError):
        return None


class ApiServer:
    """The aiohttp application serving the simulated API of one ``KubeSim``."""

    def __init__(self, sim: KubeSim):
        self.sim = sim
        self.store = sim.store
        self._session: aiohttp.ClientSession | None = None
        self._round_robin = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- recording and faults ------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        raw = await request.read()
        record = RecordedRequest(
            request.method,
            request.path,
            dict(request.query),
            request.content_type,
            _parse_body(raw, request.content_type),
            accept=request.headers.get("Accept", ""),
        )
        self.sim.request_log.append(record)
        network = request.path.startswith(NETWORK_PREFIX)  # in-cluster traffic: no API server auth
        try:
            if not network:
                self._authorize(request, record)
        except ApiError as exc:
            record.status = exc.code
            return _json(exc.status_body(), exc.code)
        fault = self.sim.faults.take(request.method, request.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                if fault.body is None:
                    body = status_body(fault.status, f"kubesim injected fault ({fault.status})")
                else:
                    body = fault.body
                record.status = fault.status
                if isinstance(body, str):
                    return web.Response(status=fault.status, text=body)
                return _json(body, fault.status)
        if network:
            response = await self._network(request)
            record.status = response.status
            return response
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _json(exc.status_body(), exc.code)
        except Exception as exc:
            log.exception("kubesim: %s %s failed", request.method, request.path)
            response = _json(status_body(500, f"kubesim internal error: {exc!r}"), 500)
        record.status = response.status
        return response

    def _authorize(self, request: web.Request, record: RecordedRequest) -> None:
        """Authenticate the bearer token and apply RBAC before any handler runs (kubesim/rbac.py)."""
        headers = request.headers
        user = self.sim.tokens.authenticate(headers.get("Authorization"), headers.get("Impersonate-User"))
        attrs = request_attributes(user, request.method, request.path, dict(request.query))
        decision = self.sim.authorizer.authorize(attrs)
        record.user, record.verb, record.group = user.name, attrs.verb, attrs.group
        record.resource, record.namespace, record.name = attrs.combined_resource, attrs.namespace, attrs.name
        record.allowed_by = f"{decision.binding} -> {decision.role}" if decision.allowed else ""
        if not decision.allowed:
            raise forbidden(attrs, decision)

    # -- routing -------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]})
        if parts[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if parts == ["version"]:
            return _json(VERSION)
        if parts == ["openapi", "v2"]:
            # An empty (valid) protobuf OpenAPI document: kubectl validates nothing client-side and
            # falls back to its built-in types for strategic merge, instead of failing to download it.
            return web.Response(
                body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        if parts[0] == "api":
            if len(parts) == 1:
                address = f"{request.host}"
                return _json(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
                    }
                )
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return _json(api_group_list())
            if len(parts) == 2:
                groups = [g for g in api_group_list()["groups"] if g["name"] == parts[1]]
                if not groups:
                    raise ApiError(404, "the server could not find the requested resource")
                return _json({"kind": "APIGroup", "apiVersion": "v1", **groups[0]})
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if group_versions().get(group) != version:
            raise ApiError(404, "the server could not find the requested resource")
        if not rest:
            return _json(api_resource_list(group, version))
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and resource_at(group, version, rest[2]):
            namespace, rest = rest[1], rest[2:]
        res = resource_at(group, version, rest[0])
        if (
            res is None
            or (res.namespaced and namespace is None and len(rest) > 1)
            or (not res.namespaced and namespace)
        ):
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub == "proxy" and sub in res.subresources:
            return await self._proxy(
                request, res, namespace, name, request.path.split(f"/{name}/proxy", 1)[1]
            )
        if (sub and sub not in res.subresources) or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        method = request.method
        if name is None:
            handler = {"GET": self._list, "POST": self._create, "DELETE": self._delete_collection}.get(method)
            if handler is None:
                raise ApiError(405, f"method {method} not allowed")
            return await handler(request, res, namespace)
        if (sub, method) in (("log", "GET"), ("eviction", "POST")):
            return await (self._log if sub == "log" else self._evict)(request, namespace, name)
        if sub in ("log", "eviction"):
            raise ApiError(405, f"method {method} not allowed")
        if sub == "scale":
            return await self._scale(request, res, namespace, name)
        handlers = {"GET": self._get, "PUT": self._replace, "PATCH": self._patch, "DELETE": self._delete}
        if method not in handlers or (sub == "status" and method == "DELETE"):
            raise ApiError(405, f"method {method} not allowed")
        return await handlers[method](request, res, namespace, name, sub)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if "protobuf" in request.content_type or "cbor" in request.content_type:
            # client-go (kubectl's typed clients) retries such a request as JSON after a 415.
            message = (
                f"the body of the request was in an unknown format: {request.content_type} "
                "(kubesim speaks JSON/YAML only: use `kubectl create -f` or `kubectl apply -f`)"
            )
            raise ApiError(415, message, "UnsupportedMediaType")
        body = _parse_body(raw, request.content_type)
        if body is None and raw:
            raise bad_request("the request body could not be decoded")
        return body

    # -- reads -----------------------------------------------------------------------------------
    def _table_or(
        self, request: web.Request, res: Resource, items: list[dict], rv: str, plain: dict
    ) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            return _json(
                to_table(res, items, rv, request.query.get("includeObject", "PartialObjectMetadata"))
            )
        if "as=PartialObjectMetadata" in accept:
            return _json(partial_metadata(plain, items, rv, accept))
        return _json(plain)

    async def _list(self, request: web.Request, res: Resource, namespace: str | None) -> web.StreamResponse:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        if _truthy(request.query.get("watch")):
            return await self._watch(request, res, namespace, labels, fields)
        items, rv = self.store.list(res, namespace, labels, fields)
        plain = {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }
        return self._table_or(request, res, items, rv, plain)

    async def _get(
        self, request: web.Request, res: Resource, namespace: str | None, name: str, sub: str | None
    ):
        obj = self.store.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return self._table_or(request, res, [obj], obj["metadata"]["resourceVersion"], obj)

    async def _watch(
        self, request: web.Request, res: Resource, namespace, labels, fields
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        table = "as=Table" in request.headers.get("Accept", "")

        def deliver(event: WatchEvent) -> None:
            if event.key == res.key:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        since = request.query.get("resourceVersion")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            replay, unsubscribe = self.store.subscribe(
                deliver, replay_key=res.key, since_rv=int(since) if since and since != "0" else None
            )
        except ApiError as exc:
            await response.write(json.dumps({"type": "ERROR", "object": exc.status_body()}).encode() + b"\n")
            await response.write_eof()
            return response

        def visible(obj: dict | None) -> bool:
            if obj is None:
                return False
            in_ns = namespace is None or obj["metadata"].get("namespace") == namespace
            return in_ns and matches(obj, labels, fields)

        async def send(event: WatchEvent) -> None:
            now, before = visible(event.obj), event.type == "MODIFIED" and visible(event.old)
            kind = event.type
            if event.type == "MODIFIED":
                kind = "MODIFIED" if now and before else "ADDED" if now else "DELETED" if before else ""
            elif not now:
                kind = ""
            if kind:
                obj = to_table(res, [event.obj], str(event.rv), "Object") if table else event.obj
                await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        deadline = loop.time() + float(request.query.get("timeoutSeconds") or 1800)
        try:
            for event in replay:
                await send(event)
            while (remaining := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), min(remaining, 1.0))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                await send(event)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away
        finally:
            unsubscribe()
        return response

    # -- writes ----------------------------------------------------------------------------------
    async def _create(self, request: web.Request, res: Resource, namespace: str | None) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be an object")
        meta = body.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        return _json(self.sim.create_object(res, body), 201)

    def _check_identity(self, body: Any, namespace: str | None, name: str) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the request body must be an object")
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if namespace and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        return body

    async def _replace(self, request: web.Request, res: Resource, namespace, name: str, sub: str | None):
        body = self._check_identity(await self._body(request), namespace, name)
        if res.kind == "Secret":
            encode_string_data(body)
        return _json(self.store.update(res, body, mode="status" if sub == "status" else "spec"))

    async def _patch(self, request: web.Request, res: Resource, namespace, name: str, sub: str | None):
        content_type = request.content_type
        if content_type not in PATCH_TYPES:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(PATCH_TYPES)}",
                "UnsupportedMediaType",
            )
        patch = await self._body(request)
        apply = PATCH_TYPES[content_type]
        if content_type == "application/apply-patch+yaml" and self.store.get(res, namespace, name) is None:
            return _json(self.sim.create_object(res, self._check_identity(patch, namespace, name)), 201)

        def fn(current: dict) -> dict:
            patched = apply(current, patch)
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            meta = patched.setdefault("metadata", {})
            if meta.get("name") != name:
                raise ApiError(
                    422, f'{res.kind} "{name}" is invalid: metadata.name: Invalid value: field is immutable'
                )
            return patched

        obj = self.store.mutate(res, namespace, name, fn, mode="status" if sub == "status" else "spec")
        if obj is None:
            raise not_found(res, name)
        return _json(obj)

    def _delete_options(self, request: web.Request, body: Any) -> tuple[int | None, dict]:
        options = body if isinstance(body, dict) else {}
        grace = options.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        return (int(grace) if grace is not None else None), options.get("preconditions") or {}

    async def _delete(self, request: web.Request, res: Resource, namespace, name: str, sub: str | None):
        grace, preconditions = self._delete_options(request, await self._body(request))
        obj = self.sim.delete_object(res, namespace, name, grace, preconditions)
        if res.kind in ("Pod", "Namespace"):
            return _json(obj)  # these kinds answer with the object (now terminating), as in Kubernetes
        details = {"name": name, "kind": res.plural, "uid": obj["metadata"]["uid"]}
        if res.group:
            details["group"] = res.group
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    async def _delete_collection(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.Response:
        grace, _ = self._delete_options(request, await self._body(request))
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        items, _ = self.store.list(res, namespace, labels, fields)
        deleted = []
        for obj in items:
            try:
                deleted.append(self.sim.delete_object(res, namespace, obj["metadata"]["name"], grace))
            except ApiError:
                continue  # removed meanwhile
        return _json(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": deleted,
            }
        )

    # -- subresources ----------------------------------------------------------------------------
    async def _scale(self, request: web.Request, res: Resource, namespace: str, name: str) -> web.Response:
        obj = self.store.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)

        def as_scale(o: dict) -> dict:
            selector = selector_from_spec(o["spec"].get("selector"))
            text = ",".join(f"{r.key}={r.values[0]}" for r in selector.requirements if r.op == "=")
            meta = {
                k: o["metadata"][k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            }
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": meta,
                "spec": {"replicas": o["spec"].get("replicas", 1)},
                "status": {"replicas": (o.get("status") or {}).get("replicas", 0), "selector": text},
            }

        if request.method == "GET":
            return _json(as_scale(obj))
        body = await self._body(request)
        if request.method == "PATCH":
            if request.content_type not in PATCH_TYPES:
                raise ApiError(415, "unsupported patch type", "UnsupportedMediaType")
            body = PATCH_TYPES[request.content_type](as_scale(obj), body)
        elif request.method != "PUT":
            raise ApiError(405, f"method {request.method} not allowed")
        replicas = int(((body or {}).get("spec") or {}).get("replicas", 0))
        expected = ((body or {}).get("metadata") or {}).get("resourceVersion")

        def fn(current: dict) -> dict:
            current["spec"]["replicas"] = replicas
            if expected:
                current["metadata"]["resourceVersion"] = expected
            return current

        return _json(as_scale(self.store.mutate(res, namespace, name, fn, mode="spec")))

    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        q = request.query
        buffer = self.sim.kubelet.log_buffer(pod, q.get("container"), _truthy(q.get("previous")))
        since = float(q["sinceSeconds"]) if q.get("sinceSeconds") else None
        if q.get("sinceTime"):
            moment = datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
            since = max((datetime.now(UTC) - moment).total_seconds(), 0.0)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            async for line in buffer.read(
                follow=_truthy(q.get("follow")),
                timestamps=_truthy(q.get("timestamps")),
                tail_lines=int(q["tailLines"]) if q.get("tailLines") else None,
                since_seconds=since,
            ):
                await response.write(line.encode())
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def _evict(self, request: web.Request, namespace: str, name: str) -> web.Response:
        body = await self._body(request) or {}
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        for pdb in self.store.list(PDBS, namespace)[0]:
            self._check_budget(pdb, pod)
        grace, preconditions = self._delete_options(request, body.get("deleteOptions"))
        # pkg/registry/core/pod/storage/eviction.go: the pod is marked before it is deleted.
        self.sim.disrupt(pod, "EvictionByEvictionAPI", "Eviction API: evicting")
        self.sim.delete_object(PODS, namespace, name, grace, preconditions)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, 201)

    def _check_budget(self, pdb: dict, pod: dict) -> None:
        selector = selector_from_spec((pdb.get("spec") or {}).get("selector"))
        if not selector.matches(pod["metadata"].get("labels")) or not is_ready(pod):
            return
        covered = [
            p for p in self.store.list(PODS, pod["metadata"]["namespace"], selector)[0] if is_active(p)
        ]
        healthy = sum(1 for p in covered if is_ready(p))

        def resolve(value: Any) -> int:
            if isinstance(value, str) and value.endswith("%"):
                return -(-len(covered) * int(value[:-1]) // 100)
            return int(value)

        spec = pdb.get("spec") or {}
        if "minAvailable" in spec:
            needed = resolve(spec["minAvailable"])
        else:
            needed = len(covered) - resolve(spec.get("maxUnavailable", 0))
        if healthy - 1 < needed:
            message = "Cannot evict pod as it would violate the pod's disruption budget."
            budget = pdb["metadata"]["name"]
            cause = f"The disruption budget {budget} needs {needed} healthy pods and has {healthy} currently"
            raise ApiError(
                429,
                message,
                "TooManyRequests",
                {"causes": [{"reason": "DisruptionBudget", "message": cause}]},
            )

    async def _network(self, request: web.Request) -> web.StreamResponse:
        """``/_network/<namespace>/<service>:<port>/<path>``: the cluster network, not the API.

        Stands in for a Service's DNS name (``<service>.<namespace>.svc``) reached from a pod: a
        request to a Service goes to one of its ready endpoints through kube-proxy and never passes
        the API server, so no token and no RBAC apply (what may connect is the NetworkPolicy's
        business). Sources: kubernetes.io/docs/concepts/services-networking/dns-pod-service/ and
        .../service/#virtual-ips-and-service-proxies. Workers in the cluster reach model servers so
        (MLOPS_SERVING_ACCESS=direct), which is why the shipped Roles grant no ``services/proxy``.
        """
        rest = request.path[len(NETWORK_PREFIX) :]
        namespace, _, rest = rest.partition("/")
        target, _, path = rest.partition("/")
        try:
            return await self._proxy(request, SERVICES, namespace, target, "/" + path)
        except ApiError as exc:
            # No API Status object on the network: an address without endpoints refuses the
            # connection (kube-proxy rejects it); 503 with the reason is the closest HTTP answer.
            return web.Response(status=503, text=exc.message)

    async def _proxy(self, request: web.Request, res: Resource, namespace: str, target: str, path: str):
        parts = target.split(":")
        name = parts[1] if len(parts) == 3 else parts[0]
        port = parts[-1] if len(parts) > 1 else None
        obj = self.store.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        local = self._service_port(obj, port) if res.kind == "Service" else self._pod_port(obj, port)
        if local is None:
            raise ApiError(503, f'no endpoints available for service "{name}"', "ServiceUnavailable")
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = f"http://127.0.0.1:{local}{path or '/'}"
        try:
            async with self._session.request(
                request.method,
                url,
                params=request.query,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
        except aiohttp.ClientError as exc:
            raise ApiError(503, f"error trying to reach service: {exc}", "ServiceUnavailable") from exc

    def _service_port(self, service: dict, port: str | None) -> int | None:
        ports = (service.get("spec") or {}).get("ports") or []
        chosen = next((p for p in ports if port is None or port in (p.get("name"), str(p.get("port")))), None)
        selector = (service.get("spec") or {}).get("selector")
        if chosen is None or not selector:
            return None
        target = chosen.get("targetPort", chosen["port"])
        pods, _ = self.store.list(PODS, service["metadata"]["namespace"], selector_from_spec(selector))
        locals_ = []
        for pod in pods:
            if not (is_active(pod) and is_ready(pod)):
                continue
            container_port = target
            if isinstance(target, str) and not target.isdigit():
                container_port = next(
                    (
                        p["containerPort"]
                        for c in pod["spec"]["containers"]
                        for p in c.get("ports") or []
                        if p.get("name") == target
                    ),
                    None,
                )
            if container_port is not None and (
                local := self.sim.kubelet.local_port(pod, int(container_port))
            ):
                locals_.append(local)
        if not locals_:
            return None
        self._round_robin += 1
        return locals_[self._round_robin % len(locals_)]

    def _pod_port(self, pod: dict, port: str | None) -> int | None:
        declared = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []]
        if port is None and not declared:
            return None
        return self.sim.kubelet.local_port(pod, int(port) if port else declared[0])
