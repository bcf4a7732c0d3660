//! The request extractors of the API, each a thin wrapper of axum's whose rejection is an
//! [`AppError`] (the one JSON error shape) instead of axum's text/plain answer: the JSON body
//! ([`Body`]: 400, 413, or 415 when it is not declared as JSON), the query string ([`Query`])
//! and the path parameters ([`Path`]); and [`opt_integer`], for integer fields, which takes
//! `60.0` as `60` (JSON Schema's `integer`, which the OpenAPI document promises, does).
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::{self, DeserializeOwned, Deserializer, Unexpected, Visitor};

use super::error::AppError;

/// Longest piece of a rejection's text put in an error message, in bytes.
const MAX_DETAIL: usize = 300;

/// axum's explanation of a rejection, bounded and with control characters escaped (it may
/// quote the request).
fn detail(text: &str) -> String {
    tether_protocol::text::escape_control(tether_protocol::text::bounded(text, MAX_DETAIL)).into_owned()
}

/// Like `Json<T>`, but a bad body is a JSON error: `bad_request` (400), `too_large` (413) or
/// `unsupported_media_type` (415: no `Content-Type: application/json`).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::UnsupportedMediaType(
                "the request body must be JSON, sent with `Content-Type: application/json`".into(),
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AppError::TooLarge(format!("request body is larger than {} bytes", super::MAX_BODY)))
            }
            Err(e) => Err(AppError::BadRequest(detail(&e.body_text()))),
        }
    }
}

/// Like `Query<T>`, but a bad query string is a `bad_request` JSON error.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(AppError::BadRequest(detail(&e.body_text()))),
        }
    }
}

/// Like `Path<T>`, but a path parameter that does not decode is a `bad_request` JSON error.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        // No name or id holds a NUL (validation refuses control characters), and PostgreSQL
        // cannot even compare one: refuse it here, before any store sees it.
        if parts.uri.path().contains("%00") {
            return Err(AppError::BadRequest("a path parameter holds a NUL character".into()));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) if e.status().is_server_error() => Err(AppError::Internal(e.body_text())),
            Err(e) => Err(AppError::BadRequest(detail(&e.body_text()))),
        }
    }
}

/// Deserializes an optional integer field of a JSON body (use with `#[serde(default,
/// deserialize_with = "…")]`): an integer, or a number with a zero fraction (`60.0`; JSON
/// Schema counts it an integer); `null` is absent. Anything else (a string too), or a value
/// outside `T`, is an error naming what was given.
pub fn opt_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_option(Integer::<T, false>(std::marker::PhantomData))
}

/// [`opt_integer`] for a field that must be present and an integer.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    opt_integer(deserializer)?.ok_or_else(|| serde::de::Error::custom("expected an integer, got null"))
}

/// A JSON object field that may be `null`: present and required without `#[serde(default)]`,
/// optional with it. Only an object is taken (serde would also take a struct written as an
/// array, `[86400]`, which no client means).
pub fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match <Option<serde_json::Value> as serde::Deserialize>::deserialize(deserializer)? {
        None => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value(v).map(Some).map_err(de::Error::custom)
        }
        Some(_) => Err(de::Error::custom("expected an object or null")),
    }
}

/// [`opt_integer`] for a query string parameter, whose value is always text: `60` or `60.0`.
pub fn opt_query_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_option(Integer::<T, true>(std::marker::PhantomData))
}

/// The visitor of [`opt_integer`] (`TEXT`: also the text of a number, for query strings).
struct Integer<T, const TEXT: bool>(std::marker::PhantomData<T>);

impl<T: TryFrom<i128>, const TEXT: bool> Integer<T, TEXT> {
    fn fit<E: de::Error>(&self, v: i128, shown: Unexpected<'_>) -> Result<Option<T>, E> {
        T::try_from(v).map(Some).map_err(|_| E::invalid_value(shown, self))
    }

    fn float<E: de::Error>(&self, v: f64) -> Result<Option<T>, E> {
        // Within ±2^100 every integral f64 converts to i128 exactly.
        const BOUND: f64 = 1_267_650_600_228_229_401_496_703_205_376.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < BOUND {
            self.fit(v as i128, Unexpected::Float(v))
        } else {
            Err(E::invalid_value(Unexpected::Float(v), self))
        }
    }
}

impl<'de, T: TryFrom<i128>, const TEXT: bool> Visitor<'de> for Integer<T, TEXT> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer in range")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.fit(i128::from(v), Unexpected::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.fit(i128::from(v), Unexpected::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.float(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if !TEXT {
            return Err(E::invalid_type(Unexpected::Str(v), &self));
        }
        if let Ok(i) = v.parse::<i128>() {
            return self.fit(i, Unexpected::Str(v));
        }
        match v.parse::<f64>() {
            Ok(f) if !v.contains(|c: char| c.is_ascii_alphabetic()) => self.float(f),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Secs {
        #[serde(default, deserialize_with = "super::opt_integer")]
        secs: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    struct Before {
        #[serde(default, deserialize_with = "super::opt_query_integer")]
        before: Option<i64>,
    }

    fn secs(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Secs>(json).map(|s| s.secs).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_may_have_a_zero_fraction_and_nothing_else() {
        assert_eq!(secs(r#"{"secs":60}"#), Ok(Some(60)));
        assert_eq!(secs(r#"{"secs":60.0}"#), Ok(Some(60)));
        assert_eq!(secs(r#"{"secs":6e1}"#), Ok(Some(60)));
        assert_eq!(secs(r#"{"secs":null}"#), Ok(None));
        assert_eq!(secs(r#"{}"#), Ok(None));
        for bad in [
            r#"{"secs":60.5}"#,
            r#"{"secs":-1}"#,
            r#"{"secs":-1.0}"#,
            r#"{"secs":"60"}"#,
            r#"{"secs":1e300}"#,
            r#"{"secs":18446744073709551616}"#,
            r#"{"secs":true}"#,
            r#"{"secs":[]}"#,
        ] {
            assert!(secs(bad).is_err(), "{bad}");
        }
        let q = |s: &str| {
            let uri: axum::http::Uri = format!("/x?{s}").parse().unwrap();
            axum::extract::Query::<Before>::try_from_uri(&uri).map(|b| b.0.before).map_err(|e| e.body_text())
        };
        assert_eq!(q("before=-5"), Ok(Some(-5)));
        assert_eq!(q("before=7.0"), Ok(Some(7)));
        assert_eq!(q(""), Ok(None));
        for bad in ["before=abc", "before=1.5", "before=inf", "before=NaN", "before=9223372036854775808"] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }
}
