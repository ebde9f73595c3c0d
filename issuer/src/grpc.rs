//! The gRPC edge: the only code that touches generated proto types. Handlers convert
//! requests into domain types (refusing bad input with `InvalidArgument` naming the field),
//! call the domain, and map errors to `Status` through `grpc::status`.

pub mod action_service;
pub mod admin_service;
pub mod api_key_service;
pub mod bundle_service;
pub mod challenge_service;
pub mod convert;
pub mod emergency;
pub mod key_service;
pub mod reason;
pub mod secret_service;
pub mod service_token_service;
pub mod status;
pub mod token_service;
pub mod webhook_service;
