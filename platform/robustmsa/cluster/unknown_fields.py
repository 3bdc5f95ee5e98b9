"""Unknown fields in a Kubernetes custom resource, found by walking its structural schema.

The API server does not reject a field that a CRD's schema does not declare: it prunes it, so a
typo such as ``minReplica`` is dropped without a word and the default applies.
``kubectl apply --validate=strict`` rejects it instead; this walk does the same offline.

A field is unknown when its object's schema lists ``properties`` without it, and allows no
others: no ``additionalProperties`` (a schema or ``true``) and no
``x-kubernetes-preserve-unknown-fields: true``. Maps (``additionalProperties`` schemas) are
walked with that schema, lists with ``items``. The top-level ``metadata``, which CRD schemas leave
as a bare ``object``, is checked against the fields of Kubernetes' ``ObjectMeta``.
"""

from __future__ import annotations

from robustmsa.cluster.files import join_path

# metav1.ObjectMeta: the fields a manifest may set (the rest are filled in by the server).
OBJECT_META_FIELDS = {
    "name": {"type": "string"},
    "generateName": {"type": "string"},
    "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "finalizers": {"type": "array", "items": {"type": "string"}},
    "ownerReferences": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    "uid": {"type": "string"},
    "resourceVersion": {"type": "string"},
    "generation": {"type": "integer"},
    "creationTimestamp": {},
    "deletionTimestamp": {},
    "deletionGracePeriodSeconds": {"type": "integer"},
    "managedFields": {"type": "array"},
    "selfLink": {"type": "string"},
}
OBJECT_META_SCHEMA = {"type": "object", "properties": OBJECT_META_FIELDS}


def find_unknown_field(instance, schema: dict, path: str = "") -> str | None:
    """The path of the first field (in document order) that ``schema`` does not declare, e.g.
    ``spec.workerGroupSpecs[1].minReplica``; ``None`` if there is none."""
    if not isinstance(schema, dict):
        return None
    if isinstance(instance, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        open_object = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for key, value in instance.items():
            child_path = join_path(path, key)
            if path == "" and key == "metadata":
                child = OBJECT_META_SCHEMA  # the server validates it as ObjectMeta
            elif key in properties:
                child = properties[key]
            elif isinstance(extra, dict):
                child = extra
            elif extra is True or open_object:
                continue
            else:
                return child_path
            found = find_unknown_field(value, child, child_path)
            if found:
                return found
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            found = find_unknown_field(item, schema["items"], join_path(path, i))
            if found:
                return found
    return None
