//! The OpenAPI document served at `/api/v1/openapi.json`: generated from the handlers'
//! annotations ([`ApiDoc`]), then given the limits the handlers enforce, from the same
//! constants they check ([`document`]), and the error answers every operation can give.
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    access, accounts, admin_tokens, audit, auth, delegates, dto, error, health, replicas, restrictions,
    rotations, tokens,
};
use crate::state::AppState;
use crate::validate;

/// The API description, as annotated on the handlers (without the limits [`document`] adds).
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Tether manager API", version = "1", description = "Delegate tokens, rotations, live delegates, admin tokens, endpoint restrictions and the audit log. Authenticate with `Authorization: Bearer tat_…`. An admin token bound to an account gets 404 for every other account's objects; one limited by an endpoint restriction gets 403 outside it; an address with too many failed admin authentications gets 429 with `Retry-After`. Every error, also for an unknown path (404) or method (405), is `{\"error\":{\"code\",\"message\"}}` with `Content-Type: application/json`."),
    paths(
        health::healthz, health::readyz, health::metrics,
        accounts::list, accounts::create, accounts::show,
        tokens::list, tokens::create, tokens::show, tokens::update, tokens::revoke, tokens::rotate, tokens::delete,
        rotations::list, rotations::show,
        delegates::list, delegates::disconnect, delegates::ping, replicas::list,
        admin_tokens::list, admin_tokens::create, admin_tokens::revoke,
        restrictions::list, restrictions::create, restrictions::delete,
        audit::list,
        crate::gateway::connect_doc, openapi_json,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, dto::AccountDto, dto::CreateAccount, dto::CreatedAccount, dto::TokenDto,
        dto::CreateToken, dto::UpdateToken, dto::RotationPolicyDto, dto::CreatedToken, dto::RotateToken, dto::RotateResponse, dto::RevokeResponse,
        dto::RotationDto, dto::RotationDelegateDto, dto::DelegateDto, dto::ReplicaDto, dto::PingRequest, dto::PingResponse,
        dto::AdminTokenDto, dto::CreateAdminToken, dto::CreatedAdminToken, dto::AuditDto,
        dto::RestrictionDto, dto::CreateRestriction,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    Json(document(state.config.max_rotation_grace_secs, state.config.min_rotate_every_secs))
}

/// The document: [`ApiDoc`] with the limits the handlers enforce (names, UUIDs, CIDRs, scopes,
/// rules, lifetimes, the grace window up to `max_grace_secs` and a rotation policy's period
/// from `min_every_secs` as configured, page sizes) and,
/// on every operation, the error answers it can give (400 for a bad parameter or body, 401 and
/// 403 and 429 for an authenticated one, 413 and 415 for one with a body).
pub fn document(max_grace_secs: u64, min_every_secs: u64) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    limit_bodies(&mut doc, max_grace_secs, min_every_secs);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                limit_parameters(op);
                add_error_answers(op);
            }
        }
    }
    doc
}

/// A name ([`validate::name`]).
fn name() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": validate::MAX_NAME_LEN, "pattern": validate::NAME_PATTERN })
}

/// Seconds in `1..=max` ([`validate::secs`]).
fn secs(max: u64) -> Value {
    json!({ "minimum": 1, "maximum": max })
}

/// An IPv4 address: four decimal octets without leading zeros.
const IPV4: &str = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
/// An IPv6 address in hexadecimal groups, `::` for a run of zero groups.
const IPV6: &str = concat!(
    "(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:",
    "|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}",
    "|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}",
    "|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}",
    "|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:))"
);

/// A list of source CIDRs ([`validate::cidrs`]): an address, or an address and a prefix length.
fn cidrs() -> Value {
    let pattern =
        format!("^(?:{IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$");
    json!({
        "maxItems": validate::MAX_CIDRS,
        "items": { "type": "string", "maxLength": validate::MAX_CIDR_LEN, "pattern": pattern },
    })
}

/// What [`access::parse_rules`] accepts, as a pattern: `METHOD /api/v1/…` matching a route,
/// each segment the route's literal, `*`, `{name}`, or (for a route's parameter) a literal.
fn rule_pattern() -> String {
    const ANY: &str = r"\*|\{[A-Za-z0-9_]{1,32}\}";
    let mut alternatives: Vec<String> = Vec::new();
    for (method, path) in super::ROUTES {
        let Some(rest) = path.strip_prefix(access::PATH_PREFIX) else { continue };
        let mut alt = format!("(?:{}|\\*) /api/v1", method.to_ascii_uppercase());
        for seg in rest.split('/') {
            if seg.starts_with('{') {
                alt.push_str(&format!("/(?:{ANY}|[A-Za-z0-9_~-][A-Za-z0-9._~-]{{0,63}})"));
            } else {
                alt.push_str(&format!("/(?:{}|{ANY})", seg.replace('.', "\\.")));
            }
        }
        if !alternatives.contains(&alt) {
            alternatives.push(alt);
        }
    }
    format!("^(?:{})$", alternatives.join("|"))
}

/// Merges `extra` into the property `field` of component schema `schema`.
fn limit(doc: &mut Value, schema: &str, field: &str, extra: Value) {
    let Some(target) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{field}")) else {
        tracing::error!(schema, field, "OpenAPI document: no such property to limit");
        return;
    };
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
}

fn limit_bodies(doc: &mut Value, max_grace_secs: u64, min_every_secs: u64) {
    let expiry = tokens::MAX_EXPIRY_SECS;
    limit(doc, "CreateAccount", "id", name());
    limit(
        doc,
        "CreateAccount",
        "name",
        json!({ "minLength": 1, "maxLength": accounts::MAX_DISPLAY_NAME, "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$" }),
    );
    limit(doc, "CreateToken", "name", name());
    limit(doc, "CreateToken", "expires_in_secs", secs(expiry));
    limit(doc, "CreateToken", "allowed_cidrs", cidrs());
    limit(doc, "RotateToken", "grace_secs", secs(max_grace_secs));
    limit(
        doc,
        "RotationPolicyDto",
        "every_secs",
        json!({ "minimum": min_every_secs, "maximum": tokens::MAX_ROTATE_EVERY_SECS }),
    );
    limit(doc, "RotationPolicyDto", "grace_secs", secs(max_grace_secs));
    limit(doc, "RotateToken", "expires_in_secs", secs(expiry));
    limit(doc, "PingRequest", "payload", json!({ "maxLength": delegates::MAX_PING_PAYLOAD }));
    limit(doc, "CreateAdminToken", "name", name());
    limit(
        doc,
        "CreateAdminToken",
        "scopes",
        json!({ "minItems": 1, "maxItems": auth::SCOPES.len(), "items": { "type": "string", "enum": auth::SCOPES } }),
    );
    limit(doc, "CreateAdminToken", "expires_in_secs", secs(admin_tokens::MAX_EXPIRY_SECS));
    limit(doc, "CreateAdminToken", "allowed_cidrs", cidrs());
    limit(doc, "CreateAdminToken", "account", name());
    limit(doc, "CreateAdminToken", "restriction", name());
    limit(doc, "CreateRestriction", "name", name());
    limit(
        doc,
        "CreateRestriction",
        "allow",
        json!({ "minItems": 1, "maxItems": access::MAX_RULES,
                "items": { "type": "string", "maxLength": access::MAX_RULE_LEN, "pattern": rule_pattern() } }),
    );
    // Optional names stay nullable: `name()` says "string", the generated schema also `null`.
    for (schema, field) in [("CreateAdminToken", "account"), ("CreateAdminToken", "restriction")] {
        limit(doc, schema, field, json!({ "type": ["string", "null"] }));
    }
}

/// The schema of a path or query parameter, by its name.
fn parameter_schema(name_: &str) -> Option<Value> {
    Some(match name_ {
        "account" | "token" | "admin_token" | "restriction" => name(),
        "rotation_id" | "session_id" => json!({ "type": "string", "format": "uuid" }),
        "limit" => json!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": audit::MAX_LIMIT,
                           "default": audit::DEFAULT_LIMIT }),
        "before" => json!({ "type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX }),
        // The WebSocket upgrade of the delegate endpoint (RFC 6455).
        "Connection" => json!({ "type": "string", "enum": ["Upgrade"] }),
        "Upgrade" => json!({ "type": "string", "enum": ["websocket"] }),
        "Sec-WebSocket-Version" => json!({ "type": "string", "enum": ["13"] }),
        "Sec-WebSocket-Key" => json!({ "type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$" }),
        _ => return None,
    })
}

fn limit_parameters(op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for p in params.iter_mut().filter_map(Value::as_object_mut) {
        let Some(schema) = p.get("name").and_then(Value::as_str).and_then(parameter_schema) else { continue };
        p.insert("schema".into(), schema);
    }
}

fn error_answer(description: &str, header: Option<(&str, Value)>) -> Value {
    let mut answer = json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    });
    if let Some((name_, schema)) = header {
        answer["headers"] = json!({ name_: { "required": true, "schema": schema } });
    }
    answer
}

/// Adds the error answers `op` can give that its annotation does not list.
fn add_error_answers(op: &mut Map<String, Value>) {
    let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let body = op.contains_key("requestBody");
    let params = op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    let mut add = |status: &str, answer: Value| {
        responses.entry(status).or_insert(answer);
    };
    if body || params {
        add("400", error_answer("Invalid parameter or body (`bad_request`)", None));
    }
    if secured {
        add(
            "401",
            error_answer(
                "No, malformed, unknown, revoked or expired admin token (`unauthorized`)",
                Some(("WWW-Authenticate", json!({ "type": "string" }))),
            ),
        );
        add("403", error_answer("Lacks the scope, or refused by the token's restriction or binding", None));
        add(
            "429",
            error_answer(
                "Too many failed admin authentications from this address (`locked_out`, `busy`)",
                Some(("Retry-After", json!({ "type": "integer", "minimum": 0 }))),
            ),
        );
    }
    if body {
        add("413", error_answer("Body larger than 64 KiB (`too_large`)", None));
        add("415", error_answer("Body not sent as `application/json` (`unsupported_media_type`)", None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique() {
        let doc = document(3600, 3600);
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "duplicate operationIds: {ids:?}");
    }

    #[test]
    fn the_rule_pattern_covers_every_api_route() {
        let pattern = rule_pattern();
        for (_, path) in super::super::ROUTES.iter().filter(|(_, p)| p.starts_with(access::PATH_PREFIX)) {
            let shown = path.replace('.', "\\.");
            let first = shown.trim_start_matches("/api/v1/").split('/').next().unwrap();
            assert!(pattern.contains(first), "{path}");
        }
        assert!(pattern.len() < 16 * 1024);
    }
}
