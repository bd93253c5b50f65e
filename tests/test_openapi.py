"""The OpenAPI document as the SDKs' source: the shape each point of the SDK issue asks for,
deprecation from the catalog, and the webhook payloads the engine really sends."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from api import schemas
from api.app import create_app
from api.settings import Settings
from engine import errors
from engine.catalog.catalog import CatalogError, load_catalog
from engine.tenants.keys import create_key

ROOT = Path(__file__).resolve().parents[1]
Doc = dict[str, Any]


@pytest.fixture
def doc(api: TestClient) -> Doc:
    body: Doc = api.get("/openapi.json").json()
    return body


def operations(doc: Doc) -> Iterator[tuple[str, str, Doc]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_every_problem_kind_is_in_the_closed_problem_type_enum() -> None:
    """The error hierarchy's kinds and the handlers' literal kinds are exactly ProblemType."""
    import engine.jobs.idempotency  # noqa: F401 - defines a StencilError subclass

    kinds: set[str] = set()
    todo: list[type[errors.StencilError]] = [errors.StencilError]
    while todo:
        cls = todo.pop()
        kinds.add(cls.type)
        todo.extend(cls.__subclasses__())
    src = "\n".join(p.read_text() for p in [*ROOT.glob("api/*.py"), *ROOT.glob("engine/**/*.py")])
    kinds |= set(re.findall(r'problem\(\s*"([a-z_]+)"', src))
    handlers = (ROOT / "api" / "problems.py").read_text()
    kinds |= set(re.findall(r'\b\d{3}: "([a-z_]+)"', handlers))  # status -> kind tables
    kinds |= set(re.findall(r'kinds\.get\([^,]+, "([a-z_]+)"\)', handlers))
    assert {errors.PROBLEM_BASE + k for k in kinds} == {t.value for t in schemas.ProblemType}


def test_image_templates_have_a_multipart_schema_with_binary_files(doc: Doc) -> None:
    body = doc["paths"]["/v1/upscale"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/UpscaleV1Request"}
    assert body["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/UpscaleV1Multipart"
    }
    comps = doc["components"]["schemas"]
    image = comps["UpscaleV1Multipart"]["properties"]["image"]
    assert image["type"] == "string" and image["format"] == "binary"
    assert comps["UpscaleV1Request"]["properties"]["image"]["type"] == "string"
    assert "format" not in comps["UpscaleV1Request"]["properties"]["image"]
    # A template without images has one JSON body.
    assert set(doc["paths"]["/v1/txt2img"]["post"]["requestBody"]["content"]) == {
        "application/json"
    }


def _header(doc: Doc, h: Doc) -> Doc:
    if "$ref" in h:
        resolved: Doc = doc["components"]["headers"][h["$ref"].rsplit("/", 1)[1]]
        return resolved
    return h


def test_response_headers_are_documented(doc: Doc) -> None:
    submit = doc["paths"]["/v1/txt2img"]["post"]["responses"]
    assert submit["202"]["headers"]["Location"]["required"] is True
    assert "Idempotent-Replayed" in submit["202"]["headers"]
    retry = _header(doc, submit["429"]["headers"]["Retry-After"])
    assert retry["required"] is True and retry["schema"]["type"] == "integer"
    for path, method, op in operations(doc):
        for code, resp in op["responses"].items():
            headers = resp.get("headers", {})
            if code == "429":
                assert "Retry-After" in headers, f"{method} {path} 429"
            if code == "503":
                assert "Retry-After" in headers, f"{method} {path} 503"
            if op.get("security") and code != "401":
                assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
                    headers
                ), f"{method} {path} {code}"
    for path in ("/v1/jobs/{job_id}/webhooks/replay", "/v1/events/{event_id}/replay"):
        assert "Idempotent-Replayed" in doc["paths"][path]["post"]["responses"]["202"]["headers"]


def test_the_event_stream_is_typed_and_resumable(doc: Doc) -> None:
    op = doc["paths"]["/v1/jobs/{job_id}/events"]["get"]
    stream = op["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert stream["$defs"]["JobEvent"] == {"$ref": "#/components/schemas/JobEvent"}
    (last,) = [p for p in op["parameters"] if p["name"] == "Last-Event-ID"]
    assert last["in"] == "header" and not last["required"]
    event = doc["components"]["schemas"]["JobEvent"]
    assert event["properties"]["type"] == {
        "$ref": "#/components/schemas/JobEventType",
        "description": event["properties"]["type"]["description"],
    }
    assert event["properties"]["job"]["$ref"] == "#/components/schemas/Job"
    assert set(doc["components"]["schemas"]["JobEventType"]["enum"]) == {
        f"job.{s}" for s in ("queued", "running", "progress", "succeeded", "failed", "cancelled")
    }


def test_what_the_server_knows_has_a_named_schema(doc: Doc) -> None:
    comps = doc["components"]["schemas"]
    job = comps["Job"]["properties"]
    # Most params first: generated clients take the first schema whose required fields match.
    assert [s["$ref"].rsplit("/", 1)[1] for s in job["params"]["anyOf"]] == [
        "Txt2imgV1Params",
        "InpaintV1Params",
        "Img2imgV1Params",
        "UpscaleV1Params",
        "UpscaleV2Params",
        "RetiredTemplateParams",
    ]
    # output_format and quality, applied by the engine, are part of every job's params.
    assert comps["Txt2imgV1Params"]["properties"]["output_format"] == {
        "$ref": "#/components/schemas/OutputFormat",
        "description": comps["Txt2imgV1Params"]["properties"]["output_format"]["description"],
    }
    assert job["inputs"]["additionalProperties"] == {"$ref": "#/components/schemas/MediaInput"}
    assert comps["UpscaleV1Params"]["properties"]["image"]["$ref"].endswith("/ImageRef")
    assert comps["TemplateInfo"]["properties"]["params"]["$ref"].endswith("/ParamsSchema")
    errors_ = comps["Problem"]["properties"]["errors"]["anyOf"][0]
    assert errors_["items"] == {"$ref": "#/components/schemas/FieldError"}
    assert comps["AccountEvent"]["properties"]["data"]["$ref"].endswith("/BudgetThresholdData")
    assert comps["Ready"]["properties"]["engine"]["$ref"].endswith("/EngineInfo")
    open_dicts = [
        f"{name}.{field}"
        for name, s in comps.items()
        for field, p in s.get("properties", {}).items()
        if p.get("type") == "object" and p.get("additionalProperties") in (None, True)
    ]
    assert open_dicts == []


def test_closed_sets_are_named_enums_declared_once(doc: Doc) -> None:
    comps = doc["components"]["schemas"]

    def inline_enums(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if "enum" in node and where.count("/") > 1:
                yield where
            for k, v in node.items():
                yield from inline_enums(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from inline_enums(v, f"{where}/{i}")

    # Enums live in components/schemas only (headers may list a value, e.g. `true`).
    found = list(inline_enums(doc["paths"], "paths"))
    assert [w for w in found if "/headers/" not in w] == []
    props = [
        f"{n}.{f}"
        for n, s in comps.items()
        for f, p in s.get("properties", {}).items()
        if "enum" in p and n != "ParamSchema"
    ]
    assert props == []
    # A template's own param enums (`Img2imgV1Sampler`) are its vetted list, which may diverge
    # from another template's; every other closed set is declared once.
    prefixes = tuple(n.removesuffix("Request") for n in comps if re.fullmatch(r".+V\d+Request", n))
    values = [
        tuple(sorted(s["enum"]))
        for n, s in comps.items()
        if "enum" in s and not n.startswith(prefixes)
    ]
    assert len(values) == len(set(values)), "an enum is declared twice"
    for name in ("JobStatus", "ChargedTo", "DeliveryStatus", "WebhookEventType", "ProblemType"):
        assert "enum" in comps[name], name
    assert comps["WebhookDelivery"]["properties"]["type"]["$ref"].endswith("/WebhookEventType")
    assert comps["AccountEvent"]["properties"]["type"]["$ref"].endswith("/AccountEventType")
    assert comps["Problem"]["properties"]["type"]["$ref"].endswith("/ProblemType")


def test_optional_inputs_are_plain_types_and_request_fields_have_no_default(doc: Doc) -> None:
    for path, method, op in operations(doc):
        for p in op.get("parameters", []):
            assert "anyOf" not in p["schema"], f"{method} {path} {p['name']}"
    for item in doc["webhooks"].values():
        for op in item.values():
            for p in op.get("parameters", []):
                assert "anyOf" not in p["schema"]
    comps = doc["components"]["schemas"]
    for name in ("Txt2imgV1Request", "UpscaleV1Request", "UpscaleV1Multipart"):
        for field, prop in comps[name]["properties"].items():
            assert "anyOf" not in prop and "default" not in prop, f"{name}.{field}"
    assert "Default: `512`." in comps["Txt2imgV1Request"]["properties"]["width"]["description"]


def test_downloads_are_bytes_and_public_routes_need_no_key(doc: Doc) -> None:
    op = doc["paths"]["/v1/files/{key}"]["get"]
    content = op["responses"]["200"]["content"]
    assert next(iter(content)) == "application/octet-stream"
    assert all(c["schema"] == {"type": "string", "format": "binary"} for c in content.values())
    assert doc["security"] == [{"HTTPBearer": []}]
    public = {path for path, _, op in operations(doc) if op.get("security") == []}
    assert public == {"/health", "/ready", "/v1/files/{key}"}


def test_texts_are_accurate(doc: Doc) -> None:
    for path, method, op in operations(doc):
        for code, resp in op["responses"].items():
            assert resp["description"] not in ("Successful Response", "Validation Error"), (
                f"{method} {path} {code}"
            )
    submit = doc["paths"]["/v1/txt2img"]["post"]["responses"]
    assert "404" not in submit
    assert "quota" in submit["429"]["description"] and "rate limit" in submit["429"]["description"]
    assert doc["info"]["license"]["url"] and doc["info"]["contact"]["url"]
    assert doc["servers"] and all(t.get("description") for t in doc["tags"])
    used = {t for _, _, op in operations(doc) for t in op["tags"]}
    assert used <= {t["name"] for t in doc["tags"]}


def test_every_webhook_a_receiver_gets_is_in_the_webhooks_section(doc: Doc) -> None:
    assert set(doc["webhooks"]) == {t.value for t in schemas.WebhookEventType}
    job = doc["webhooks"]["job.failed"]["post"]
    assert job["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/JobWebhookEvent"
    )
    assert {p["name"] for p in job["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }


def test_the_engine_s_webhook_payloads_match_their_schemas() -> None:
    """The bodies `store` writes to the outbox parse, field for field, as the documented models."""
    from engine.db.tables import Job, Tenant, TenantEvent
    from engine.webhooks.outbox import account_event_payload, job_event_payload

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = Job(
        id="job_1",
        tenant_id="t1",
        template="txt2img",
        template_version="1.0.0",
        status="failed",
        error=errors.problem_of(errors.JobTimedOut("over 300 s")),
        outputs=[],
        created_at=now,
        finished_at=now,
    )
    body = job_event_payload(job, now)
    parsed = schemas.JobWebhookEvent.model_validate(body)
    assert set(body) == set(schemas.JobWebhookEvent.model_fields)
    assert set(body["data"]) == set(schemas.JobWebhookData.model_fields)
    assert parsed.data.error is not None and parsed.data.error.type == schemas.ProblemType.TIMEOUT
    ev = TenantEvent(
        id="evt_1",
        tenant_id="t1",
        type="budget.threshold",
        payload={
            "type": "budget.threshold",
            "tenant_id": "t1",
            "tenant": "acme",
            "month": "2026-01",
            "budget_usd": "10.000000",
            "threshold": "0.8",
            "spend_usd": "8.000000",
        },
        created_at=now,
    )
    body = account_event_payload(ev, Tenant(id="t1", name="acme"))
    schemas.BudgetThresholdWebhookEvent.model_validate(body)
    assert set(body["data"]) == set(schemas.BudgetThresholdWebhookData.model_fields)


# ---- deprecation and versions from the catalog -----------------------------------------------


def versioned_catalog(tmp: Path, **v1: Any) -> Path:
    """The shipped catalog with txt2img v1 marked as asked and a txt2img v2 beside it."""
    shutil.copytree(ROOT / "templates", tmp / "templates")
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    (v1_t,) = [t for t in data["templates"] if t["name"] == "txt2img"]
    v2 = json.loads(json.dumps(v1_t, default=str))
    v2["version"] = "2.0.0"
    v2["params"]["steps"]["maximum"] = 150  # a v2 may change its params
    v1_t.update(v1)
    data["templates"].append(v2)
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_deprecated_version_says_so_in_headers_the_document_and_templates(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from datetime import date

    catalog = versioned_catalog(tmp_path, deprecated=date(2026, 11, 1), sunset=date(2027, 3, 1))
    app = create_app(make_settings(catalog=catalog), start_engine=False)
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        doc = client.get("/openapi.json").json()
        v1 = doc["paths"]["/v1/txt2img"]["post"]
        assert v1["deprecated"] is True and "served until 2027-03-01" in v1["description"]
        assert {"Deprecation", "Sunset", "Link"} <= set(v1["responses"]["202"]["headers"])
        v2 = doc["paths"]["/v2/txt2img"]["post"]
        assert "deprecated" not in v2 and v2["operationId"] == "run_txt2img_v2"
        assert "Txt2imgV2Request" in doc["components"]["schemas"]
        assert (
            doc["components"]["schemas"]["Txt2imgV2Request"]["properties"]["steps"]["maximum"]
            == 150
        )

        r = client.post("/v1/txt2img", json={"prompt": "x"}, headers=h)
        assert r.status_code == 202
        since = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
        assert r.headers["deprecation"] == f"@{since}"
        assert r.headers["sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"
        assert r.headers["link"] == '</v2/txt2img>; rel="successor-version"'
        r2 = client.post("/v2/txt2img", json={"prompt": "x"}, headers=h)
        assert r2.status_code == 202 and "deprecation" not in r2.headers

        info = client.get("/v1/templates", headers=h).json()["data"]
        by = {(t["name"], t["version"]): t for t in info}
        old = by[("txt2img", "1.1.0")]
        assert old["deprecated"] and old["sunset_at"] == "2027-03-01"
        assert old["successor"] == "/v2/txt2img" and old["operation_id"] == "run_txt2img_v1"
        assert by[("txt2img", "2.0.0")]["deprecated"] is False


def test_a_sunset_needs_a_deprecation(tmp_path: Path) -> None:
    from datetime import date

    with pytest.raises(CatalogError, match="sunset needs deprecated"):
        load_catalog(versioned_catalog(tmp_path, sunset=date(2027, 3, 1)))


def test_cancelling_a_finished_job_is_a_conflict_with_a_numeric_status(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    from engine.jobs.states import QUEUED, SUCCEEDED
    from engine.jobs.store import transition

    h = new_key("acme")
    job = api.post("/v1/txt2img", json={"prompt": "x"}, headers=h).json()
    db = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:  # as a worker would finish it
        assert transition(s, job["id"], [QUEUED], SUCCEEDED)
    r = api.delete(f"/v1/jobs/{job['id']}", headers=h)
    assert r.status_code == 409
    body = r.json()
    assert body["status"] == 409 and body["job_status"] == "succeeded"
