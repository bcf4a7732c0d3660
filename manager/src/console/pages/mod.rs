//! The console's pages, one file per family. Each handler takes the signed-in caller
//! ([`super::auth::Signed`], or [`super::auth::Action`] for a form) and calls the REST handler
//! of the same operation: the page is only the HTML around the API's answer.
use axum::extract::State;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::error::AppError;
use crate::state::AppState;

pub mod accounts;
pub mod admin_tokens;
pub mod audit;
pub mod delegates;
pub mod rotations;
pub mod secret;
pub mod tokens;

/// The manager's state as the REST handlers take it.
pub fn app(console: &super::Console) -> State<AppState> {
    State(console.app.clone())
}

/// A REST request body built from a form, exactly as a JSON client would send it: the
/// handler's own deserialisation then decides what is valid.
pub fn body<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, AppError> {
    serde_json::from_value(value).map_err(|e| {
        AppError::BadRequest(format!("invalid form: {}", tether_protocol::text::bounded(&e.to_string(), 200)))
    })
}

/// The wire word of an enum the API serialises (`running`, `acked`, …).
pub fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// The JSON answer of a REST handler, unwrapped.
pub fn json<T>(answer: Result<Json<T>, AppError>) -> Result<T, AppError> {
    answer.map(|Json(t)| t)
}

/// An optional form field: `None` when left empty.
pub fn filled(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// A duration typed as a number and a unit (`minutes`, `hours`, `days`) in seconds; `None`
/// when the number is left empty.
pub fn duration_secs(amount: Option<&str>, unit: Option<&str>) -> Result<Option<u64>, AppError> {
    let Some(amount) = filled(amount) else { return Ok(None) };
    let n: u64 =
        amount.parse().map_err(|_| AppError::BadRequest("invalid duration: give a whole number".into()))?;
    let unit_secs = match unit.unwrap_or("days") {
        "seconds" => 1,
        "minutes" => 60,
        "hours" => 3_600,
        "days" => 86_400,
        _ => return Err(AppError::BadRequest("invalid duration unit".into())),
    };
    n.checked_mul(unit_secs)
        .map(Some)
        .ok_or_else(|| AppError::BadRequest("invalid duration: too long".into()))
}

/// CIDRs typed in one field, separated by commas, spaces or new lines.
pub fn cidr_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `haystack` contains `needle`, ignoring case (an empty needle matches).
pub fn contains_ci(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// The form field of a duration: a number and a unit.
pub fn duration_field(id: &str, label: &str, hint: &str, default_unit: &str) -> maud::Markup {
    let unit_id = format!("{id}-unit");
    maud::html! {
        div {
            label for=(id) { (label) span class="hint" { (hint) } }
            input type="number" id=(id) name=(id) min="1" inputmode="numeric";
        }
        div {
            label for=(unit_id) { "Unit" }
            select id=(unit_id) name=(unit_id) {
                @for unit in ["minutes", "hours", "days"] {
                    option value=(unit) selected[unit == default_unit] { (unit) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cidrs_from_form_text() {
        assert_eq!(duration_secs(Some(""), Some("days")).ok(), Some(None));
        assert_eq!(duration_secs(Some("2"), Some("hours")).ok(), Some(Some(7_200)));
        assert!(duration_secs(Some("x"), None).is_err());
        assert!(duration_secs(Some("99999999999999999999"), None).is_err());
        assert!(duration_secs(Some(&u64::MAX.to_string()), Some("days")).is_err());
        assert_eq!(cidr_list(Some("10.0.0.0/8, 192.168.0.0/16\n::1/128")).len(), 3);
        assert!(contains_ci("Build-Agent", "agent"));
    }
}
