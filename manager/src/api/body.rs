//! A JSON body extractor whose rejections are [`AppError`]s with a clear message.
use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::AppError;

/// Like `Json<T>`, but a bad body is a `bad_request` JSON error.
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
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AppError::TooLarge(format!("request body is larger than {} bytes", super::MAX_BODY)))
            }
            Err(e) => Err(AppError::BadRequest(e.body_text())),
        }
    }
}
