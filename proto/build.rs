//! Compiles `tessera/v1/*.proto` with protox (pure Rust: no system protoc needed) and
//! writes the encoded file descriptor set next to the generated code for reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "tessera/v1/keys.proto",
    "tessera/v1/tokens.proto",
    "tessera/v1/bundle.proto",
    "tessera/v1/validator.proto",
    "tessera/v1/admin.proto",
    "tessera/v1/webhooks.proto",
    "tessera/v1/apikeys.proto",
    "tessera/v1/servicetokens.proto",
    "tessera/v1/actions.proto",
    "tessera/v1/challenges.proto",
    "tessera/v1/secrets.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(PROTOS, ["."])?;
    std::fs::write(
        out_dir.join("tessera_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(file_descriptors)?;
    Ok(())
}
