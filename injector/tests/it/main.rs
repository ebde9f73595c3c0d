//! Integration tests of the injector: the real binary over HTTPS, its start-up, and the
//! deploy/k8s manifests checked against it.

mod cli;
mod json_patch;
mod manifests;
mod sidecar_config;
mod support;
mod webhook;
