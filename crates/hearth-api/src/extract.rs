//! Request parts the handlers take: the caller's team (from `X-API-Key`),
//! JSON bodies and query strings, each failing with the JSON error body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ApiKeyRecord, TeamRecord};

/// How often a key's "last used" time is written, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The team of the API key the request carries.
#[derive(Debug, Clone)]
pub struct Caller {
    pub team: TeamRecord,
    pub key: ApiKeyRecord,
    /// The key as presented (returned by `GET /teams`, like E2B's `apiKey`).
    pub presented: String,
}

/// When each key's use was last written.
#[derive(Debug, Default)]
pub struct KeyTouches(Mutex<HashMap<String, Instant>>);

impl KeyTouches {
    fn due(&self, key_id: &str) -> bool {
        let mut touched = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match touched.get(key_id) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                touched.insert(key_id.to_owned(), now);
                true
            }
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("x-api-key") else {
            return Err(ApiError::Unauthorized(
                "missing API key: send it in the X-API-Key header".into(),
            ));
        };
        let presented = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("invalid API key".into()))?
            .trim()
            .to_owned();
        let Some((team, key)) = state.store.authenticate(&presented).await? else {
            return Err(ApiError::Unauthorized("invalid API key".into()));
        };
        if state.key_touches.due(&key.key_id)
            && let Err(error) = state.store.touch_api_key(&key.key_id).await
        {
            tracing::warn!(%error, "recording an API key's use failed");
        }
        Ok(Self {
            team,
            key,
            presented,
        })
    }
}

/// A path parameter (a sandbox, template or key id); one that cannot be
/// read is a JSON 400 like every other error.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))
    }
}

/// Two path parameters (a template and a build or hash).
#[derive(Debug)]
pub struct PathPair(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathPair {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path((a, b))| Self(a, b))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))
    }
}

/// A JSON body; an empty body reads as `{}`, since several endpoints take
/// an optional one.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(format!("the request body is too large: {e}"))
                } else {
                    ApiError::BadRequest(format!("reading the request body: {e}"))
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
    }
}

/// The query string as decoded pairs.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The parameter as an integer, if present.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|value| {
                value.parse().map_err(|_| {
                    ApiError::BadRequest(format!("query parameter {name} must be an integer"))
                })
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Self(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}
