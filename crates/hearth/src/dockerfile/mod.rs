//! `hearth template build PATH`: a Dockerfile built through the control
//! plane's E2B build API, exactly as the SDKs' `from_dockerfile` does.

mod client;
mod parse;

pub use client::{ApiTarget, build, build_logged};
pub use parse::parse;
