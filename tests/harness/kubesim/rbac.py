"""Authentication by bearer token and RBAC authorization, as kube-apiserver does them.

Followed (kubernetes v1.32):
- staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go (``NewRequestInfo``): the verb of a
  request (GET on a collection is ``list``, ``watch=true`` makes it ``watch``, DELETE on a collection is
  ``deletecollection``, POST ``create``, PUT ``update``, PATCH ``patch``), its API group, resource,
  subresource, namespace and name; anything outside ``/api`` and ``/apis/...`` is a non-resource URL.
- plugin/pkg/auth/authorizer/rbac/rbac.go (``RBACAuthorizer.Authorize``, ``RuleAllows``) and
  pkg/apis/rbac/v1/evaluation_helpers.go (``VerbMatches``, ``APIGroupMatches``, ``ResourceMatches`` with
  ``resource/subresource`` and ``*/subresource``, ``ResourceNameMatches``, ``NonResourceURLMatches``):
  ClusterRoleBindings grant cluster-wide; a RoleBinding grants its Role, or a ClusterRole, inside its own
  namespace only; a ServiceAccount subject without a namespace means the binding's namespace.
- pkg/registry/rbac/validation/rule.go (``appliesToUser``): User, Group and ServiceAccount subjects.
- plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go: every authenticated user may read the
  discovery paths (ClusterRoles system:discovery, system:public-info-viewer).
- staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go (``forbiddenMessage``) and
  staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go (``NewForbidden``): the 403 ``Status`` body,
  ``pods "x" is forbidden: User "..." cannot get resource "pods/log" in API group "" in the namespace "ns"``.
- staging/src/k8s.io/apiserver/pkg/endpoints/filters/impersonation.go: a user allowed to impersonate (here
  the admin) acts as ``Impersonate-User``; a service account's name gets its groups, plus
  ``system:authenticated``. kubectl sends no bearer token over plain HTTP, so ``kubectl --as=...`` is how a
  kubectl run acts as a service account against kubesim.
- A service account's user name is ``system:serviceaccount:NS:NAME``, with the groups
  ``system:serviceaccounts``, ``system:serviceaccounts:NS`` and ``system:authenticated``
  (staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go).

Harness conventions (the only places kubesim is kinder than a cluster, and only for the tests' own
set-up): the kubeconfig's default token ``kubesim`` and a request with no token at all are the cluster
admin (group ``system:masters``, which the API server lets through before RBAC). Any other unknown token
is refused with 401, as the token authenticator does.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass, field

from .errors import ApiError
from .resources import group_versions, resource_for
from .store import Store

ADMIN_TOKEN = "kubesim"
MASTERS = "system:masters"
ROLES, CLUSTER_ROLES = resource_for("Role"), resource_for("ClusterRole")
ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS = resource_for("RoleBinding"), resource_for("ClusterRoleBinding")
# bootstrappolicy/policy.go: system:discovery + system:public-info-viewer, bound to system:authenticated.
DISCOVERY_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version",
                   "/version/", "/openapi", "/openapi/*")  # fmt: skip


@dataclass(frozen=True)
class User:
    """An authenticated identity."""

    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups


ADMIN = User("kubernetes-admin", (MASTERS, "system:authenticated"))


def service_account_user(namespace: str, name: str) -> User:
    """The user a service account's token authenticates as."""
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (requestinfo.go's RequestInfo plus the user)."""

    user: User
    verb: str
    path: str
    resource_request: bool
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass
class Decision:
    """Whether the request is allowed and, if so, by which binding and role."""

    allowed: bool
    binding: str = ""
    role: str = ""
    errors: list[str] = field(default_factory=list)


class Tokens:
    """Bearer tokens the API accepts, each mapped to a user (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, User] = {ADMIN_TOKEN: ADMIN}

    def add(self, token: str, user: User) -> None:
        with self._lock:
            self._users[token] = user

    def authenticate(self, authorization: str | None, impersonate: str | None = None) -> User:
        """The user of an ``Authorization`` header; no header means the admin (harness convention)."""
        user: User | None = ADMIN
        if authorization:
            scheme, _, token = authorization.partition(" ")
            with self._lock:
                user = self._users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if impersonate:
            if not user.is_admin:
                message = (
                    f'users "{impersonate}" is forbidden: User "{user.name}" cannot impersonate resource '
                )
                raise ApiError(403, message + '"users" in API group "" at the cluster scope', "Forbidden")
            parts = impersonate.split(":")
            if len(parts) == 4 and impersonate.startswith("system:serviceaccount:"):
                return service_account_user(parts[2], parts[3])
            return User(impersonate, ("system:authenticated",))
        return user


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "GET": "get", "HEAD": "get"}


def request_attributes(user: User, method: str, path: str, query: dict[str, str]) -> Attributes:
    """requestinfo.go ``NewRequestInfo`` for the URLs kubesim serves."""
    parts = [p for p in path.split("/") if p]
    verb = _VERBS.get(method, method.lower())
    if method == "DELETE":
        verb = "delete"
    if not parts or parts[0] not in ("api", "apis"):
        return Attributes(user, verb, path, False)
    if parts[0] == "api":
        group, rest = "", parts[2:]
        if len(parts) < 2:
            return Attributes(user, verb, path, False)
    else:
        if len(parts) < 3:
            return Attributes(user, verb, path, False)
        group, rest = parts[1], parts[3:]
    if not rest or group_versions().get(group) is None:
        return Attributes(user, verb, path, False)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name:
        verb = {"get": "list", "delete": "deletecollection"}.get(verb, verb)
    if verb in ("list", "get") and query.get("watch", "").lower() in ("true", "1"):
        verb = "watch"
    return Attributes(user, verb, path, True, group, resource, subresource, namespace, name)


def _applies_to(subject: dict, user: User, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    return False


def rule_allows(rule: dict, attrs: Attributes) -> bool:
    """evaluation_helpers.go ``RuleAllows``."""
    verbs = rule.get("verbs") or []
    if not ("*" in verbs or attrs.verb in verbs):
        return False
    if not attrs.resource_request:
        return any(
            u == "*" or u == attrs.path or (u.endswith("*") and attrs.path.startswith(u[:-1]))
            for u in rule.get("nonResourceURLs") or []
        )
    groups = rule.get("apiGroups") or []
    if not ("*" in groups or attrs.group in groups):
        return False
    resources = rule.get("resources") or []
    resource_ok = any(
        r == "*" or r == attrs.combined_resource or (attrs.subresource and r == f"*/{attrs.subresource}")
        for r in resources
    )
    if not resource_ok:
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


class Authorizer:
    """RBAC over the Roles, ClusterRoles and bindings stored in the simulated cluster."""

    def __init__(self, store: Store):
        self.store = store

    def _role_rules(self, ref: dict, namespace: str, errors: list[str]) -> list[dict] | None:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self.store.get(CLUSTER_ROLES, None, name)
            label = f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        else:
            role = self.store.get(ROLES, namespace, name)
            label = f'role.rbac.authorization.k8s.io "{name}" not found'
        if role is None:
            errors.append(label)
            return None
        return role.get("rules") or []

    def authorize(self, attrs: Attributes) -> Decision:
        """Allow when any binding of the user grants a matching rule; otherwise deny with the reasons."""
        user = attrs.user
        if user.is_admin:
            return Decision(True, "system:masters", "cluster-admin")
        if not attrs.resource_request and "system:authenticated" in user.groups:
            if any(fnmatch.fnmatchcase(attrs.path, p) for p in DISCOVERY_PATHS):
                return Decision(True, "system:discovery", "system:discovery")
        errors: list[str] = []
        for binding in self.store.list(CLUSTER_ROLE_BINDINGS)[0]:
            if not any(_applies_to(s, user, "") for s in binding.get("subjects") or []):
                continue
            rules = self._role_rules(binding.get("roleRef") or {}, "", errors) or []
            if any(rule_allows(r, attrs) for r in rules):
                name = binding["metadata"]["name"]
                return Decision(
                    True, f"ClusterRoleBinding/{name}", f"ClusterRole/{binding['roleRef']['name']}"
                )
        if attrs.namespace:
            for binding in self.store.list(ROLE_BINDINGS, attrs.namespace)[0]:
                if not any(_applies_to(s, user, attrs.namespace) for s in binding.get("subjects") or []):
                    continue
                ref = binding.get("roleRef") or {}
                rules = self._role_rules(ref, attrs.namespace, errors) or []
                if any(rule_allows(r, attrs) for r in rules):
                    name = f"RoleBinding/{attrs.namespace}/{binding['metadata']['name']}"
                    return Decision(True, name, f"{ref.get('kind')}/{ref.get('name')}")
        return Decision(False, errors=errors)


def forbidden(attrs: Attributes, decision: Decision) -> ApiError:
    """The API server's 403 for a denied request (responsewriters.Forbidden + errors.NewForbidden)."""
    user = attrs.user.name
    if not attrs.resource_request:
        message = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    elif attrs.namespace:
        message = (
            f'User "{user}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
            f'"{attrs.group}" in the namespace "{attrs.namespace}"'
        )
    else:
        message = (
            f'User "{user}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
            f'"{attrs.group}" at the cluster scope'
        )
    if decision.errors:
        reasons = decision.errors[0] if len(decision.errors) == 1 else f"[{', '.join(decision.errors)}]"
        message += f": RBAC: {reasons}"
    if not attrs.resource_request:
        return ApiError(403, f"forbidden: {message}", "Forbidden")
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    details = {"kind": attrs.resource}
    if attrs.group:
        details["group"] = attrs.group
    if attrs.name:
        details["name"] = attrs.name
        return ApiError(403, f'{qualified} "{attrs.name}" is forbidden: {message}', "Forbidden", details)
    return ApiError(403, f"{qualified} is forbidden: {message}", "Forbidden", details)
