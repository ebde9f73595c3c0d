# The issuer and the sidecar in one small image (docker-compose.yml, deploy/k8s).
# Not exercised by CI (its machine has no Docker engine).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tessera-issuer -p tessera-sidecar

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/tessera tessera \
 && mkdir -p /var/lib/tessera /var/lib/tessera-sidecar /run/tessera \
 && chown tessera /var/lib/tessera /var/lib/tessera-sidecar /run/tessera
COPY --from=build /src/target/release/tessera-issuer /src/target/release/tessera-sidecar /usr/local/bin/
USER tessera
EXPOSE 50051 8080 9090
CMD ["tessera-issuer", "serve"]
