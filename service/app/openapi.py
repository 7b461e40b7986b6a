"""The OpenAPI 3.0 description of the model API, served at ``/docs.json`` and ``/openapi.json``.

It describes every route the service answers, with request and response schemas and
every error response in the stable error shape, so clients and fuzzers know the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.app.header_limit import MAX_HEADER_BYTES

if TYPE_CHECKING:
    from service.model.contract import ModelContract

_IMAGE = {
    "type": "array",
    "description": "A flattened 8x8 image: 64 numbers in [0, 1] (or 8 rows of 8).",
    "minItems": 64,
    "maxItems": 64,
    "items": {"type": "number", "minimum": 0, "maximum": 1},
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "field": {"type": "string"},
                "feature": {"type": "string"},
                "flagged": {"type": "array", "items": {"type": "integer"}},
            },
        }
    },
}

_ERRORS = {
    "400": "Malformed request (e.g. a bad Content-Length).",
    "401": "Missing, expired or invalid bearer token.",
    "403": "Denied by policy; `reasons` says why.",
    "404": "No such route.",
    "405": "Method not allowed on this route.",
    "413": "Request body too large.",
    "422": "Invalid input; `field` names the offending field.",
    "429": "Rate limited; see Retry-After.",
    "431": (
        f"Request header fields total more than {MAX_HEADER_BYTES} bytes (counted as "
        "name: value and CRLF per field)."
    ),
    "500": "Internal error (no details are disclosed).",
    "503": (
        "A security layer (policy engine, monitor, review queue, audit log) is unavailable; "
        "the request is denied."
    ),
    "504": "The request (body upload included) did not finish within the service's deadline.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: str, codes: tuple[str, ...]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(_ref(ok), "Success.")}
    for code in codes:
        responses[code] = _json(_ref("Error"), _ERRORS[code])
    return responses


def _instance(contract: ModelContract | None) -> dict[str, Any]:
    """The schema of one instance: the built-in digits image, or the declared contract's."""
    if contract is None:
        return _IMAGE
    d = contract.n_features
    low, high = float(contract.lower.min()), float(contract.upper.max())
    per_feature = bool((contract.lower != contract.lower[0]).any()) or bool(
        (contract.upper != contract.upper[0]).any()
    )
    shape = "x".join(str(n) for n in contract.shape)
    bounds = (
        "each feature within its own declared bounds (GET metadata lists them)"
        if per_feature
        else f"every value in [{low:g}, {high:g}]"
    )
    return {
        "type": "array",
        "description": (
            f"One {contract.modality} input of shape {shape}: {d} numbers, flat or nested in "
            f"that shape, {bounds}. A value outside its bounds, a non-number or a wrong "
            "length is refused with 422 naming the field."
        ),
        "minItems": d if len(contract.shape) == 1 else 1,
        "maxItems": d,
        "items": {"type": "number", "minimum": low, "maximum": high}
        if len(contract.shape) == 1
        else {},
    }


def _operations(summary: str) -> dict[str, dict[str, Any]]:
    batch_errors = ("400", "401", "403", "405", "413", "422", "429", "431", "500", "503", "504")
    return {
        "predict": {
            "post": {
                "operationId": "predict",
                "summary": summary,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PredictRequest")}},
                },
                "responses": _responses("PredictResponse", batch_errors),
            }
        },
        "explain": {
            "post": {
                "operationId": "explain",
                "summary": "Attributions for a batch (roles allowed to explain only).",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ExplainRequest")}},
                },
                "responses": _responses("ExplainResponse", batch_errors),
            }
        },
        "metadata": {
            "get": {
                "operationId": "metadata",
                "summary": "What the served model is.",
                "responses": _responses(
                    "Metadata", ("401", "403", "405", "429", "431", "500", "503", "504")
                ),
            }
        },
    }


def _named(operations: dict[str, dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    """The operations at ``/v1/models/<name>/<action>``, with their own operation ids."""
    return {
        f"/v1/models/{name}/{action}": {
            method: {**op, "operationId": f"{action}_{name}".replace("-", "_").replace(".", "_")}
            for method, op in ops.items()
        }
        for action, ops in operations.items()
    }


def build_spec(
    *,
    max_batch: int,
    title: str = "ztml model API",
    contract: ModelContract | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Return the OpenAPI document.

    Args:
        max_batch: The largest batch the service accepts.
        title: The document's title.
        contract: The served model's declared contract (None: the built-in digits model).
        model_name: The served model's name: its routes ``/v1/models/<name>/...`` are
            described beside the unnamed ones.
    """
    d = 64 if contract is None else contract.n_features
    n_classes = 10 if contract is None else contract.n_classes
    batch: dict[str, Any] = {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_batch,
                "items": _ref("Image"),
            }
        },
    }
    explain_request = {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            **batch["properties"],
            "method": {"type": "string", "enum": ["integrated_gradients", "saliency"]},
        },
    }
    probabilities = {
        "type": "array",
        "items": {"type": "number"},
        "minItems": n_classes,
        "maxItems": n_classes,
    }
    model_ref = {
        "type": "object",
        "required": ["name", "digest"],
        "properties": {"name": {"type": "string"}, "digest": {"type": "string"}},
    }
    review = {"type": "integer", "nullable": True}
    schemas = {
        "Image": _instance(contract),
        "PredictRequest": batch,
        "ExplainRequest": explain_request,
        "Error": _ERROR,
        "PredictResponse": {
            "type": "object",
            "required": ["request_id", "model", "predictions", "flagged", "review_id"],
            "properties": {
                "request_id": {"type": "string"},
                "model": model_ref,
                "predictions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["label", "probabilities", "suspicion", "flagged"],
                        "properties": {
                            "label": {"type": "integer", "minimum": 0, "maximum": n_classes - 1},
                            "probabilities": probabilities,
                            "suspicion": {"type": "number", "minimum": 0, "maximum": 1},
                            "flagged": {"type": "boolean"},
                        },
                    },
                },
                "flagged": {"type": "boolean"},
                "review_id": review,
            },
        },
        "ExplainResponse": {
            "type": "object",
            "required": ["request_id", "model", "method", "explanations", "review_id"],
            "properties": {
                "request_id": {"type": "string"},
                "model": model_ref,
                "method": {"type": "string"},
                "explanations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["label", "attributions", "suspicion", "flagged"],
                        "properties": {
                            "label": {"type": "integer"},
                            "attributions": {
                                "type": "array",
                                "items": {"type": "number"},
                                "minItems": d,
                                "maxItems": d,
                            },
                            "suspicion": {"type": "number"},
                            "flagged": {"type": "boolean"},
                        },
                    },
                },
                "review_id": review,
            },
        },
        "Metadata": {
            "type": "object",
            "required": ["model", "input", "classes"],
            "properties": {
                "model": {"type": "object"},
                "input": {"type": "object"},
                "classes": {"type": "array", "items": {"type": "integer"}},
            },
        },
    }
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    what = "8x8 digit images" if contract is None else f"{contract.name} inputs"
    operations = _operations(f"Classify a batch of {what}.")
    plain = {"description": "OK.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": "1",
            "description": (
                "Zero-trust model API: every call needs a bearer JWT, is rate limited, "
                "authorized by OPA, sanitized and audited."
            ),
        },
        "servers": [{"url": "/"}],
        "security": security,
        "paths": {
            **{f"/{action}": ops for action, ops in operations.items()},
            **(_named(operations, model_name) if model_name else {}),
            "/livez": {
                "get": {"operationId": "livez", "security": [], "responses": {"200": plain}}
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": plain,
                        "503": _json(_ref("Error"), "Not ready."),
                    },
                }
            },
            "/metrics": {
                "get": {"operationId": "metrics", "security": [], "responses": {"200": plain}}
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
