"""The OpenAPI 3.0 description of the model API, served at ``/docs.json`` and ``/openapi.json``.

It describes every route the service answers, with request and response schemas and
every error response in the stable error shape, so clients and fuzzers know the contract.
"""

from __future__ import annotations

from typing import Any

from service.app.header_limit import MAX_HEADER_BYTES

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


def build_spec(*, max_batch: int, title: str = "ztml model API") -> dict[str, Any]:
    """Return the OpenAPI document."""
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
    probabilities = {"type": "array", "items": {"type": "number"}, "minItems": 10, "maxItems": 10}
    model_ref = {
        "type": "object",
        "required": ["name", "digest"],
        "properties": {"name": {"type": "string"}, "digest": {"type": "string"}},
    }
    review = {"type": "integer", "nullable": True}
    schemas = {
        "Image": _IMAGE,
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
                            "label": {"type": "integer", "minimum": 0, "maximum": 9},
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
                                "minItems": 64,
                                "maxItems": 64,
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
    batch_errors = ("400", "401", "403", "405", "413", "422", "429", "431", "500", "503", "504")
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
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
            "/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": "Classify a batch of 8x8 digit images.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PredictRequest")}},
                    },
                    "responses": _responses("PredictResponse", batch_errors),
                }
            },
            "/explain": {
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
            "/metadata": {
                "get": {
                    "operationId": "metadata",
                    "summary": "What the served model is.",
                    "responses": _responses(
                        "Metadata", ("401", "403", "405", "429", "431", "500", "503", "504")
                    ),
                }
            },
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
