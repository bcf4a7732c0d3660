//! The OpenAPI document, generated from the handlers' annotations, served at
//! `/api/v1/openapi.json`.
use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, admin_tokens, audit, delegates, dto, error, health, restrictions, rotations, tokens};

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Tether manager API", version = "1", description = "Delegate tokens, rotations, live delegates, admin tokens, endpoint restrictions and the audit log. Authenticate with `Authorization: Bearer tat_…`. An admin token bound to an account gets 404 for every other account's objects; one limited by an endpoint restriction gets 403 outside it; an address with too many failed admin authentications gets 429 with `Retry-After`."),
    paths(
        health::healthz, health::readyz, health::metrics,
        accounts::list, accounts::create, accounts::show,
        tokens::list, tokens::create, tokens::show, tokens::revoke, tokens::rotate, tokens::delete,
        rotations::list, rotations::show,
        delegates::list, delegates::disconnect, delegates::ping,
        admin_tokens::list, admin_tokens::create, admin_tokens::revoke,
        restrictions::list, restrictions::create, restrictions::delete,
        audit::list,
        crate::gateway::connect_doc, openapi_json,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, dto::AccountDto, dto::CreateAccount, dto::CreatedAccount, dto::TokenDto,
        dto::CreateToken, dto::CreatedToken, dto::RotateToken, dto::RotateResponse, dto::RevokeResponse,
        dto::RotationDto, dto::RotationDelegateDto, dto::DelegateDto, dto::PingRequest, dto::PingResponse,
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
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
