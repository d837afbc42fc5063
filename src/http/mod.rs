//! The player port's HTTP side, as one axum app (sockets and WebSocket upgrades are
//! [`crate::accept`]'s): the session API ([`api`]), Wilbur's REST API ([`rest`], when on),
//! `/healthz` and `/readyz` (`health`) and static files ([`static_files`]), with Wilbur's CORS
//! ([`cors`]) and the client's address taken through trusted reverse proxies ([`client_addr`]).

pub mod api;
pub mod client_addr;
pub mod cors;
pub(crate) mod headers;
pub(crate) mod health;
pub mod pages;
pub(crate) mod redirect;
pub mod rest;
#[cfg(test)]
mod rest_tests;
pub mod static_files;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;
use tracing::warn;

use self::client_addr::ReverseProxy;
use self::cors::{Cors, CorsError};
use self::static_files::{Files, StaticFiles};

/// The client's address: the TCP peer's, or with `reverse_proxy` on, the one the trusted
/// proxies forwarded ([`client_addr`]; port 0 when they gave none).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// The player port's plain-HTTP settings, beside the session API's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Web {
    pub static_files: StaticFiles,
    pub cors: Cors,
    pub reverse_proxy: ReverseProxy,
    /// What the built-in pages ([`pages`]) need: the streamer port the server bound.
    pub pages: pages::Settings,
}

/// [`Web`] checked and built, once, at start.
#[derive(Debug, Clone)]
pub struct Site {
    files: Arc<Files>,
    cors: Option<CorsLayer>,
    hops: u32,
    pages: pages::Settings,
}

impl Site {
    /// Reverse proxies trusted for the client's address ([`ReverseProxy::hops`]).
    pub(crate) fn hops(&self) -> u32 {
        self.hops
    }
}

impl Web {
    /// Builds what the routes use; logs a warning for each static folder that is missing.
    pub fn build(&self) -> Result<Site, CorsError> {
        let cors = self.cors.layer()?;
        for warning in self.static_files.startup_warnings() {
            warn!("{warning}");
        }
        Ok(Site {
            files: self.static_files.service(),
            cors,
            hops: self.reverse_proxy.hops(),
            pages: self.pages,
        })
    }
}

impl Site {
    /// The same site with the built-in pages' settings replaced (the streamer port is known
    /// only once bound, after [`Web::build`] has said its warnings).
    #[must_use]
    pub fn with_pages(mut self, pages: pages::Settings) -> Self {
        self.pages = pages;
        self
    }
}

/// The player port's routes. A WebSocket upgrade is served before any route, so it works on
/// every path, the API's and the static files' included. The session API keeps its own CORS
/// (`[sessions] cors_origins`); Wilbur's CORS covers every other route: `/api`, `/healthz`,
/// `/readyz`, static files and 404s.
pub fn app(
    shutdown: CancellationToken,
    api: api::Api,
    rest: Option<rest::Rest>,
    site: &Site,
) -> axum::Router {
    let files = site.files.clone();
    let mut web = axum::Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route(
            "/readyz",
            axum::routing::get(move || health::readyz(shutdown.clone())),
        )
        .merge(rest::routes(rest))
        .merge(pages::routes(site.pages))
        .fallback(move |request: Request| pages::static_files_or_player(files.clone(), request))
        .layer(axum::middleware::from_fn(
            crate::accept::limits::count_request,
        ));
    if let Some(cors) = &site.cors {
        web = web.layer(cors.clone());
    }
    api::routes(api).merge(web)
}

pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests;
